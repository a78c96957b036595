package hub

import (
	"context"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// A node whose board was taken by another node, and that has not heard of it yet, delivers
// nothing more to its old session: a send through it leaves the message Enqueued for the new
// owner instead of locking it for a connection the board has left (where it would sit until its
// lock expired, an hour here).
func TestClusterFencedNodeDoesNotDeliverToItsOldSession(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	cfg := testConfig()
	cfg.LockTimeout = time.Hour
	cfg.Store, cfg.NodeID = url, "a"
	a := openHub(t, t.TempDir(), cfg)
	b := openNode(t, url, "b")
	mustDevice(t, a, "pi-1")
	onA := newConn("pi-1")
	a.Attach(onA)
	// Node b takes pi-1 behind a's back: no wake-up, so a still holds its session.
	if err := b.st.update(context.Background(), func(tx storeTx) error {
		_, err := tx.claimDevice("pi-1", "b", b.now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1"})
	q, err := a.Queue(context.Background(), "pi-1")
	if err != nil || len(q) != 1 || q[0].State != iothub.StateEnqueued || q[0].DeliveryCount != 0 {
		t.Fatalf("pi-1's queue after a send through the fenced node: %+v, %v; want m1 Enqueued, never delivered", q, err)
	}
	select {
	case m := <-onA.ch:
		t.Fatalf("the fenced node delivered %s to the session pi-1 left", m.MessageID)
	default:
	}
}
