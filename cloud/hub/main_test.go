package hub

import (
	"os"
	"testing"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestMain stops the PostgreSQL server that the store tests start on first use (internal/pgtest).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
