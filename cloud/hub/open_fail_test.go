package hub

import (
	"bytes"
	"context"
	"database/sql"
	"runtime"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestFailedOpenLeavesNoGoroutineBehind: an Open that fails after the cluster's clock loop
// started (here: the connection history's table is gone) stops that loop and releases the data
// directory, so a caller that retries (or a test binary that goes on) holds nothing of it.
// Not parallel: it looks at every goroutine of the process.
func TestFailedOpenLeavesNoGoroutineBehind(t *testing.T) {
	url := pgtest.DB(t)
	cfg := testConfig()
	cfg.Store, cfg.NodeID = url, "a" // the system clock: the store's clock is read and followed
	h := openHub(t, t.TempDir(), cfg)
	h.Close()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE device_connections RENAME TO device_connections_gone`); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if h, err := Open(context.Background(), dir, cfg, Events{}); err == nil {
		h.Close()
		t.Fatal("Open without the connection history's table succeeded")
	} else if !strings.Contains(err.Error(), "load connection history") {
		t.Fatalf("Open failed elsewhere than intended: %v", err)
	}
	buf := make([]byte, 1<<20)
	for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\n")) {
		if bytes.Contains(g, []byte(".clockLoop(")) {
			t.Errorf("the clock loop of the failed Open still runs:\n%s", g)
		}
	}
	if _, err := db.Exec(`ALTER TABLE device_connections_gone RENAME TO device_connections`); err != nil {
		t.Fatal(err)
	}
	h2 := openHub(t, dir, cfg) // the data directory's lock was released
	h2.Close()
}
