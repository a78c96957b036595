// Package cli is the `c2d` command: the operator's and field technician's tool for a c2d hub (or an
// Azure-shaped one). It provisions devices, sends cloud-to-device messages, waits for their outcome,
// reads delivery feedback and inspects queues, all through the hub's HTTP service API
// (cloud/apiclient).
//
// Everything a script relies on lives here and is documented in docs/cli.md: the exit codes
// (exit.go, the only place they are defined), the JSON field names (Azure's where Azure has them),
// and the rule that results go to stdout while progress and errors go to stderr.
package cli
