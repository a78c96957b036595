package hub

import (
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// A node on a shared store keeps the database server's time: whatever offset it held, a clock
// reading replaces it with the server's (here on the same machine, so within the round trip).
func TestSyncClockTakesTheStoresTime(t *testing.T) {
	parallel(t)
	h := openNode(t, pgtest.DB(t), "a")
	h.skew.Store(int64(time.Hour)) // as if this node's clock were an hour behind the server's
	if err := h.syncClock(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	server, err := h.st.now(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := h.storeNow().Sub(server); d < -time.Second || d > time.Second {
		t.Fatalf("after a clock reading the node's time is %v off the server's", d)
	}
}

// The store's clock is the server's when the dialect reads one (PostgreSQL: its microseconds since
// the epoch), the local clock otherwise (SQLite, on this machine). A dialect whose server clock
// query returns a fixed instant shows which of the two now() read.
func TestStoreClockIsTheServersWhenTheDialectHasOne(t *testing.T) {
	st := sqliteStore(t)
	before := time.Now()
	if got, err := st.now(ctxT(t)); err != nil || got.Before(before) || got.After(time.Now()) {
		t.Fatalf("SQLite's store clock: %v, %v; want the local clock", got, err)
	}
	st.d.serverTime = "SELECT 1700000000123456" // this store's own dialect (sqliteDialect makes one a store)
	if got, err := st.now(ctxT(t)); err != nil || !got.Equal(time.UnixMicro(1700000000123456)) {
		t.Fatalf("store clock with a server clock query: %v, %v; want the query's instant", got, err)
	}
}
