package version

import "fmt"

// Set at link time: -X github.com/c2d-project/c2d/internal/version.Version=... (and .Commit).
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is what every binary prints for --version.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s)", program, Version, Commit)
}
