package hub

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// A takeover wake-up that arrives after the device already moved on to this node (it reconnected
// here within the sender's coalescing window) is stale: the session stays. One from a later
// takeover drops it.
func TestClusterStaleTakeoverWakeUp(t *testing.T) {
	url := pgtest.DB(t)
	b := openNode(t, url, "b")
	gone := make(chan string, 4)
	b.OnDeviceGone(func(id string) { gone <- id })
	mustDevice(t, b, "pi-1")
	b.Attach(newConn("pi-1"))
	b.mu.Lock()
	epoch := b.devs["pi-1"].epoch
	b.mu.Unlock()
	wakeUp := func(at int64) {
		p, _ := json.Marshal(wake{Node: "a", Owned: []string{"pi-1"}, OwnedAt: []int64{at}})
		b.cl.received(string(p))
	}
	wakeUp(epoch - 1)
	select {
	case id := <-gone:
		t.Fatalf("a takeover at epoch %d dropped %s's session held at epoch %d", epoch-1, id, epoch)
	case <-time.After(300 * time.Millisecond):
	}
	wakeUp(epoch + 1)
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatalf("a takeover at epoch %d left the session held at epoch %d", epoch+1, epoch)
	}
}
