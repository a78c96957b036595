package hub

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// A takeover wake-up that arrives after the device already moved on to this node (it reconnected
// here within the sender's coalescing window) is stale: the session stays. One from a later
// takeover drops it.
func TestClusterStaleTakeoverWakeUp(t *testing.T) {
	parallel(t)
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

// wakeUps listens on the cluster's channel, as a third node would, and returns its reader: the
// next wake-up of any node within the given time.
func wakeUps(t *testing.T, url string) func(within time.Duration) (wake, bool) {
	t.Helper()
	ctx := ctxT(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	l, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	if _, err := l.Exec(ctx, "LISTEN "+pgChannel); err != nil {
		t.Fatal(err)
	}
	return func(within time.Duration) (wake, bool) {
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		n, err := l.WaitForNotification(wctx)
		if err != nil {
			return wake{}, false
		}
		var w wake
		if err := json.Unmarshal([]byte(n.Payload), &w); err != nil {
			t.Fatalf("wake-up %q: %v", n.Payload, err)
		}
		return w, true
	}
}

// A node alone on the store sends no wake-ups (nobody would read them); a node that joins says
// Hello, and from then on the first node's changes are announced again.
func TestClusterWakeUpsOnlyWithPeers(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a := openNode(t, url, "a")
	mustDevice(t, a, "pi-1")
	conn := newConn("pi-1")
	a.Attach(conn)

	next := wakeUps(t, url)

	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1"})
	settle(t, a, "pi-1", conn.next(t), iothub.DispositionComplete, "")
	if w, ok := next(300 * time.Millisecond); ok {
		t.Fatalf("node a, alone, sent a wake-up: %+v", w)
	}

	openNode(t, url, "b")
	if w, ok := next(waitLimit); !ok || w.Node != "b" || !w.Hello {
		t.Fatalf("node b joined without a Hello: %+v, %v", w, ok)
	}
	// a hears the Hello on a connection of its own, maybe after the listener above did.
	if !waitFor(t, a.cl.peers.Load) {
		t.Fatal("node a did not learn of node b")
	}
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m2"})
	settle(t, a, "pi-1", conn.next(t), iothub.DispositionComplete, "")
	for {
		w, ok := next(waitLimit)
		if !ok {
			t.Fatal("node a announced nothing once node b was there")
		}
		if w.Node == "a" && len(w.Settled) > 0 && w.Settled[0] == [2]string{"pi-1", "m2"} {
			return
		}
	}
}

// A node that has not yet heard a joining node's Hello still sends what no poll recovers: a twin
// desired change for a device held there, and changed keys. (Dropping them lost a desired patch
// for a board connected to the new node until it reconnected.)
func TestClusterUnpolledWakeUpsBeforeHello(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	desired := make(chan string, 1)
	b.OnDesiredChange(func(id string, v int64, p []byte) { desired <- id })
	creds := make(chan string, 1)
	b.OnCredentialsChanged(func(id string) { creds <- id })
	d := mustDevice(t, a, "pi-1")
	if !waitFor(t, func() bool { return a.cl.heard.Load() != 0 }) { // b's Hello, b's only wake-up here
		t.Fatal("node a did not hear node b's Hello")
	}
	a.cl.peers.Store(false) // as before b's Hello arrived

	a.PublishDesiredChange("pi-1", 2, []byte(`{"$version":2}`))
	d.Authentication.SymmetricKey.PrimaryKey = "cHJpbWFyeSBrZXkgcmVwbGFjZWQ="
	if _, _, err := a.PutDevice(ctxT(t), d, "*"); err != nil {
		t.Fatal(err)
	}
	for what, ch := range map[string]chan string{"desired change": desired, "key change": creds} {
		select {
		case id := <-ch:
			if id != "pi-1" {
				t.Fatalf("b heard a %s for %s, want pi-1", what, id)
			}
		case <-time.After(waitLimit):
			t.Fatalf("b heard no %s for pi-1 from a node that had not heard its Hello", what)
		}
	}
}

// A commit announces at once what it changed for boards held elsewhere: a send through node a for
// a board on node b is a kick naming it (b delivers without waiting for its poll), a send for a
// board on a itself is kicked there and not announced, and a feedback batch made ready is
// announced to the node a receiver may be waiting on.
func TestClusterWakeUpsAnnounceRemoteKicksAndFeedback(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	next := wakeUps(t, url)
	if !waitFor(t, func() bool { return a.cl.peers.Load() && b.cl.peers.Load() }) {
		t.Fatal("the two nodes did not learn of each other")
	}
	mustDevice(t, a, "pi-1")
	mustDevice(t, a, "pi-2")
	onB, onA := newConn("pi-1"), newConn("pi-2")
	b.Attach(onB)
	a.Attach(onA)

	mustSend(t, a, "pi-2", iothub.SendRequest{MessageID: "local"})
	onA.next(t)
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "remote", Ack: iothub.AckFull})
	for announced := false; !announced; {
		w, ok := next(waitLimit)
		if !ok {
			t.Fatal("node a did not announce the message it queued for pi-1, held on node b")
		}
		if w.Node != "a" {
			continue
		}
		if slices.Contains(w.Kick, "pi-2") {
			t.Fatalf("node a announced a kick of pi-2, held on a itself: %+v", w)
		}
		announced = slices.Contains(w.Kick, "pi-1")
	}
	settle(t, b, "pi-1", onB.next(t), iothub.DispositionComplete, "")
	for {
		w, ok := next(waitLimit)
		if !ok {
			t.Fatal("no node announced the feedback batch of pi-1's completion")
		}
		if w.Feedback {
			return
		}
	}
}

// A takeover wake-up without epochs (from a node of an older version, during a rolling upgrade)
// drops each session it names: the older node has those devices now.
func TestClusterTakeoverWakeUpOfAnOlderNodeDropsTheSession(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	b := openNode(t, url, "b")
	gone := make(chan string, 4)
	b.OnDeviceGone(func(id string) { gone <- id })
	for _, id := range []string{"pi-1", "pi-2", "pi-3"} {
		mustDevice(t, b, id)
		b.Attach(newConn(id))
	}
	// A board with a session first (an old node sends no epochs: nothing to index), one without
	// a session here (skipped, and the rest still read), then another with a session.
	b.cl.received(`{"n":"old","o":["pi-1","pi-9","pi-3"]}`)
	dropped := map[string]bool{}
	for len(dropped) < 2 {
		select {
		case id := <-gone:
			dropped[id] = true
		case <-time.After(waitLimit):
			t.Fatalf("a takeover wake-up without epochs left sessions: dropped only %v", dropped)
		}
	}
	if !dropped["pi-1"] || !dropped["pi-3"] {
		t.Fatalf("dropped %v, want pi-1 and pi-3", dropped)
	}
	b.mu.Lock()
	_, kept := b.devs["pi-2"]
	b.mu.Unlock()
	if !kept {
		t.Fatal("pi-2's session, not named in the wake-up, was dropped")
	}
}

// A node keeps announcing its changes across its heartbeats while another node is alive (its
// heartbeats, not only its wake-ups, keep it known), and stops once that node has left.
func TestClusterPeersKnownAcrossHeartbeats(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a := openNode(t, url, "a")
	cfg := testConfig()
	cfg.Store, cfg.NodeID = url, "b"
	b, err := Open(context.Background(), t.TempDir(), cfg, Events{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if !waitFor(t, a.cl.peers.Load) {
		t.Fatal("node a did not learn of node b")
	}
	// The second heartbeat seen is after the first one had finished, peers included.
	beat := func() time.Time { // a's last heartbeat, as `c2d hub status` lists it
		st, err := a.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.Nodes {
			if n.NodeID == "a" {
				return n.HeartbeatTimeUTC
			}
		}
		t.Fatal("node a is not listed")
		return time.Time{}
	}
	for range 2 {
		last := beat()
		if !waitFor(t, func() bool { return beat().After(last) }) {
			t.Fatal("node a's heartbeat did not move")
		}
		if !a.cl.peers.Load() {
			t.Fatal("after a heartbeat node a takes itself for alone although node b is alive")
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(t, func() bool { return !a.cl.peers.Load() }) {
		t.Fatal("node a still announces its changes after node b left")
	}
}
