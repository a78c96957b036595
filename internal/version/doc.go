// Package version holds the build's version and commit, stamped by the Makefile and
// scripts/cross-build.sh with -ldflags -X; a plain `go build` says "dev".
package version
