// Package testproc runs the project's real programs for tests: it builds them once as shipped
// (CGO_ENABLED=0), starts `c2d-hub serve` on loopback and waits until the hub says where it
// listens (DATA/endpoints.json with the child's pid), hands out the owner connection string and
// a service client, and stops the hub with SIGTERM. SyncBuffer collects a child's output (or a
// logger's) from several goroutines so a failing test can print it.
//
// It is the one copy of that harness; test packages keep only what is particular to them.
package testproc
