// Package mutation runs gremlins' survivors again against the tests of other packages.
//
// gremlins (make mutation) runs only a mutated package's own tests. Some packages are driven end
// to end from elsewhere: cloud/methods' Service by cloud/server's method tests (real paho devices,
// the HTTP API, a cluster), cloud/twin's service side by the broker's, the API's and the server's
// twin tests. For them a mutant the package's own tests let live may well be killed by the tests
// that exercise it, and gremlins' figure says less than the suite pins. Retest takes gremlins'
// JSON report, applies each mutant it reports as lived or not covered — the same token swap
// gremlins makes, at the same line and column — through `go test -overlay` (the tree is never
// written), runs the named test packages against it, and writes the report again with the new
// statuses and figures.
package mutation
