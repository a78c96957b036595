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
