package hub

import (
	"context"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/logtest"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// A node's heartbeat keeps its row; a node whose row another node removed (it declared it dead:
// its heartbeat had stopped) registers again at its next beat, with the API it advertised, and
// says Hello. A
// node that is alive does not take itself for dead.
func TestClusterNodeDeclaredDeadRegistersAgain(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	logs := &logtest.Recorder{}
	cfg := testConfig()
	cfg.Store, cfg.NodeID, cfg.Logger = url, "b", logs.Logger()
	b := openHub(t, t.TempDir(), cfg)
	a := openNode(t, url, "a")
	ctx := context.Background()
	if err := b.AdvertiseAPI(ctx, "https://10.0.0.2:8443", "n2.example"); err != nil {
		t.Fatal(err)
	}
	row := func() (node iothub.NodeStatus, ok bool) { // b's row, as `c2d hub status` lists it
		t.Helper()
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.Nodes {
			if n.NodeID == "b" {
				return n, true
			}
		}
		return iothub.NodeStatus{}, false
	}
	const msg = "this node was declared dead by another (stalled past the node timeout); its devices reconnect"

	first, _ := row()
	beats := 0
	if !waitFor(t, func() bool { // two heartbeats of b's
		if n, ok := row(); ok && n.HeartbeatTimeUTC.After(first.HeartbeatTimeUTC) {
			first, beats = n, beats+1
		}
		return beats == 2
	}) {
		t.Fatal("node b's heartbeat did not move")
	}
	if got := logs.With(msg); len(got) != 0 {
		t.Fatalf("an alive node took itself for dead: %v", got)
	}
	if got := logs.With("heartbeat failed"); len(got) != 0 {
		t.Fatalf("good heartbeats logged as failed: %v", got)
	}

	next := wakeUps(t, url)
	if err := a.st.update(ctx, func(tx storeTx) error { return tx.deleteNode("b") }); err != nil {
		t.Fatal(err)
	}
	if !waitFor(t, func() bool { n, ok := row(); return ok && n.APIURL == "https://10.0.0.2:8443" }) {
		t.Fatal("node b, declared dead, did not register again with its API")
	}
	// ... and says Hello again: the others may have stopped announcing to it.
	for {
		w, ok := next(waitLimit)
		if !ok {
			t.Fatal("node b registered again without a Hello")
		}
		if w.Node == "b" && w.Hello {
			break
		}
	}
	if got := logs.With(msg); len(got) != 1 {
		t.Fatalf("%d %q lines; want one", len(got), msg)
	}
}

// The poll is the safety net under the wake-ups: a message sent through a node whose wake-up
// never reached the device's node (here: dropped, as by a node that believes itself alone) is
// still delivered, found by the device's node's poll of queued messages.
func TestClusterPollDeliversWhatNoWakeUpAnnounced(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	mustDevice(t, a, "pi-1")
	conn := newConn("pi-1")
	attached := time.Now().UnixNano()
	b.Attach(conn)
	// a has heard b's takeover of pi-1 (the last wake-up b sends here), so nothing of b's sets
	// a's peers again before the send.
	if !waitFor(t, func() bool { return a.cl.heard.Load() >= attached }) {
		t.Fatal("node a did not hear node b take pi-1")
	}
	a.cl.peers.Store(false) // a's wake-up for the send below is dropped
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1"})
	if m := conn.next(t); m.MessageID != "m1" {
		t.Fatalf("delivered %s, want m1", m.MessageID)
	}
}
