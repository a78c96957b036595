package server_test

import (
	"os"
	"testing"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestMain stops the PostgreSQL server pgtest.DB starts for the package's cluster tests.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
