package hub

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// Nodes of one cluster in one test process: separate hubs (own data directory, own node id) on
// one PostgreSQL database. What a user of the cluster sees: a device on any node gets what is sent
// through any node, --wait through any node returns at the settle, feedback through any node once.

func openNode(t *testing.T, url, node string) *Hub {
	t.Helper()
	cfg := testConfig()
	cfg.Store, cfg.NodeID = url, node
	return openHub(t, t.TempDir(), cfg)
}

func TestClusterCrossNode(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b, c := openNode(t, url, "a"), openNode(t, url, "b"), openNode(t, url, "c")
	mustDevice(t, a, "pi-1")
	conn := newConn("pi-1")
	b.Attach(conn)

	sent := time.Now()
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	waited := make(chan iothub.MessageStatus, 1)
	ctx := ctxT(t)
	go func() {
		st, err := c.WaitSettled(ctx, "pi-1", "m1")
		if err != nil {
			st.Reason = err.Error()
		}
		waited <- st
	}()
	m := conn.next(t)
	t.Logf("send through node a → delivery on node b: %v", time.Since(sent))
	if m.MessageID != "m1" {
		t.Fatalf("delivered %s", m.MessageID)
	}
	settle(t, b, "pi-1", m, iothub.DispositionComplete, "")
	if st := <-waited; st.Outcome != iothub.StatusSuccess {
		t.Fatalf("--wait through node c saw %+v", st)
	}

	// Feedback: received through node a, completed once; node c finds no second copy.
	fb, err := a.ReceiveFeedback(ctxT(t))
	if err != nil || len(fb.Records) != 1 || fb.Records[0].OriginalMessageID != "m1" {
		t.Fatalf("feedback through node a: %+v, %v", fb, err)
	}
	noFeedback(t, c, 300*time.Millisecond)
	if err := c.CompleteFeedback(context.Background(), fb.LockToken); err != nil {
		t.Fatalf("complete through node c: %v", err)
	}
	wantCode(t, a.CompleteFeedback(context.Background(), fb.LockToken), ErrLockLost, iothub.CodeDeviceMessageLockLost)

	st, err := b.Status(context.Background())
	if err != nil || st.Node != "b" || st.ConnectedDeviceCount != 1 || len(st.Nodes) != 3 ||
		st.Nodes[0].NodeID != "a" || st.Nodes[2].NodeID != "c" || time.Since(st.Nodes[0].HeartbeatTimeUTC) > nodeTimeout {
		t.Fatalf("status through b: %+v, %v", st, err)
	}
}

// TestClusterTakeover: the device connects to node a, then to node b while a still holds a
// locked message: a drops its session, the message is redelivered through b and completed once,
// and a late complete through a's stale session is refused. The lock outlasts the test: the
// redelivery is the takeover's, not the lock's expiry.
func TestClusterTakeover(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	cfg := testConfig()
	cfg.LockTimeout = time.Hour
	cfg.Store = url
	cfg.NodeID = "a"
	a := openHub(t, t.TempDir(), cfg)
	cfg.NodeID = "b"
	b := openHub(t, t.TempDir(), cfg)
	var goneOnA atomic.Int32
	goneCh := make(chan struct{}, 1)
	a.OnDeviceGone(func(id string) {
		if id == "pi-1" && goneOnA.Add(1) == 1 {
			goneCh <- struct{}{}
		}
	})
	mustDevice(t, a, "pi-1")
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	onA := newConn("pi-1")
	a.Attach(onA)
	first := onA.next(t)

	onB := newConn("pi-1")
	b.Attach(onB)
	select {
	case <-goneCh:
	case <-time.After(2 * time.Second):
		t.Fatal("node a did not drop its session within 2 s of the takeover")
	}
	again := onB.next(t)
	if again.MessageID != "m1" || again.LockToken == first.LockToken {
		t.Fatalf("redelivered through b: %+v (first token %s)", again, first.LockToken)
	}
	wantCode(t, a.Settle(context.Background(), "pi-1", first.LockToken, iothub.DispositionComplete, ""),
		ErrLockLost, iothub.CodeDeviceMessageLockLost)
	settle(t, b, "pi-1", again, iothub.DispositionComplete, "")
	st := waitSettled(t, a, "pi-1", "m1")
	if st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 2 {
		t.Fatalf("status through a: %+v", st)
	}
	recs := receiveRecords(t, b, 1)
	if recs[0].StatusCode != iothub.StatusSuccess {
		t.Fatalf("feedback %+v", recs)
	}
	noFeedback(t, a, 300*time.Millisecond)
	onA.none(t, 200*time.Millisecond)
}

// A node whose heartbeat stops is declared dead: its device's locked message goes back to the
// queue without waiting for the lock timeout, and the device carries on through another node.
func TestClusterDeadNodeReleasesLocks(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	cfg := testConfig()
	cfg.LockTimeout = time.Hour
	cfg.Store, cfg.NodeID = url, "a"
	a, err := Open(context.Background(), t.TempDir(), cfg, Events{})
	if err != nil {
		t.Fatal(err)
	}
	b := openNode(t, url, "b")
	mustDevice(t, b, "pi-1")
	mustSend(t, b, "pi-1", iothub.SendRequest{MessageID: "m1"})
	onA := newConn("pi-1")
	a.Attach(onA)
	onA.next(t)
	crash(a) // node a stops heartbeating, as a killed node would; nothing is released

	died := time.Now()
	waitFor := func() {
		for {
			q, err := b.Queue(context.Background(), "pi-1")
			if err == nil && len(q) == 1 && q[0].State == iothub.StateEnqueued {
				return
			}
			if time.Since(died) > 3*nodeTimeout {
				t.Fatalf("node a's lock not released %v after it died: %+v, %v", time.Since(died), q, err)
			}
			time.Sleep(50 * time.Millisecond) // polling a condition, with a deadline
		}
	}
	waitFor()
	t.Logf("released %v after the node stopped (node timeout %v)", time.Since(died), nodeTimeout)
	st, err := b.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.NodeID == "a" {
			t.Fatalf("node a, declared dead, is still listed: %+v", st.Nodes)
		}
	}
	onB := newConn("pi-1")
	b.Attach(onB)
	if m := onB.next(t); m.MessageID != "m1" {
		t.Fatalf("delivered %s", m.MessageID)
	}
}

// In a cluster a settle counts only through the node holding the device's session: the current
// lock token presented to another node is refused there as lock lost (and the message stays the
// session's to settle), for complete, reject and abandon alike.
func TestClusterSettleThroughANodeWithoutTheSessionIsLockLost(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	mustDevice(t, a, "pi-1")
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1"})
	c := newConn("pi-1")
	a.Attach(c)
	m := c.next(t)
	for _, d := range []iothub.Disposition{iothub.DispositionComplete, iothub.DispositionReject, iothub.DispositionAbandon} {
		wantCode(t, b.Settle(context.Background(), "pi-1", m.LockToken, d, ""), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	}
	settle(t, a, "pi-1", m, iothub.DispositionComplete, "")
	if st := waitSettled(t, b, "pi-1", "m1"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
		t.Fatalf("m1 after the refused settles: %+v; want Success by the session, one delivery", st)
	}
}
