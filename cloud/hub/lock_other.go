//go:build !unix

package hub

// lockDataDir is a no-op where flock is not available; c2d-hub targets Linux.
func lockDataDir(string) (func(), error) { return func() {}, nil }
