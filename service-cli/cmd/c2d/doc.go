// Command c2d is the operator's and field technician's CLI for a c2d hub: devices, send (and wait
// for the outcome), feedback, queues. See docs/cli.md; exit codes are defined in service-cli/cli.
package main
