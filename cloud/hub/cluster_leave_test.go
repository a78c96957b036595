package hub

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/logtest"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// crash stops h as kill -9 would, as far as the store can tell: its loops stop (no heartbeat, no
// wake-up) and nothing is released or removed.
func crash(h *Hub) {
	h.mu.Lock()
	close(h.done)
	h.mu.Unlock()
	h.wg.Wait()
	h.st.close()
	h.unlock()
}

// warnings are the records at Warn level or above.
func warnings(r *logtest.Recorder) []map[string]any {
	var out []map[string]any
	for _, m := range r.All() {
		if lv, _ := m["level"].(slog.Level); lv >= slog.LevelWarn {
			out = append(out, m)
		}
	}
	return out
}

// A node that shuts down cleanly leaves the cluster at once: the other nodes no longer list it
// (they need not wait for the node timeout), the messages its boards held locked are back in the
// queue, and neither joining, announcing a takeover nor leaving logs a warning.
func TestClusterCleanShutdownLeavesAtOnceWithoutWarnings(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	logs := &logtest.Recorder{}
	cfg := testConfig()
	cfg.LockTimeout = time.Hour
	cfg.Store, cfg.NodeID, cfg.Logger = url, "b", logs.Logger()
	b, err := Open(context.Background(), t.TempDir(), cfg, Events{})
	if err != nil {
		t.Fatal(err)
	}
	a := openNode(t, url, "a")
	if !waitFor(t, b.cl.peers.Load) { // b announces its takeover below: a's Hello reached it
		t.Fatal("node b did not learn of node a")
	}
	mustDevice(t, a, "pi-1")
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1"})
	onB := newConn("pi-1")
	b.Attach(onB)
	onB.next(t)
	ctx := context.Background()
	listed := func() bool {
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.Nodes {
			if n.NodeID == "b" {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatal("node b is not listed while it runs")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if listed() {
		t.Error("node b is still listed right after its clean shutdown")
	}
	q, err := a.Queue(ctx, "pi-1")
	if err != nil || len(q) != 1 || q[0].State != iothub.StateEnqueued {
		t.Errorf("pi-1's queue right after node b shut down: %+v, %v; want m1 Enqueued", q, err)
	}
	if w := warnings(logs); len(w) != 0 {
		t.Errorf("node b's start and clean shutdown logged warnings: %v", w)
	}
}

// A node that crashed and starts again under its own id takes back at once what its earlier run
// held: the messages locked for each of its boards are back in the queue when Open returns, not
// after their lock (an hour here), also those locked behind one already back in the queue; no
// other node is there to declare it dead.
func TestClusterNodeRestartedAfterACrashReleasesItsEarlierLocks(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	cfg := testConfig()
	cfg.LockTimeout = time.Hour
	cfg.MaxInFlight = 3
	cfg.Store, cfg.NodeID = url, "a"
	a, err := Open(context.Background(), t.TempDir(), cfg, Events{})
	if err != nil {
		t.Fatal(err)
	}
	mustDevice(t, a, "pi-2")
	mustSend(t, a, "pi-2", iothub.SendRequest{MessageID: "m-pi-2"})
	onPi2 := newConn("pi-2")
	a.Attach(onPi2)
	onPi2.next(t)
	// pi-1: m1 abandoned and back in the queue (its redelivery failed: the connection is broken),
	// m2 and m3 still locked behind it.
	mustDevice(t, a, "pi-1")
	for _, id := range []string{"m1", "m2", "m3"} {
		mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: id})
	}
	onPi1 := newConn("pi-1")
	a.Attach(onPi1)
	m1 := onPi1.next(t)
	onPi1.next(t)
	onPi1.next(t)
	onPi1.setFail(errors.New("connection broken"))
	settle(t, a, "pi-1", m1, iothub.DispositionAbandon, "")
	states := func(h *Hub, id string) map[string]iothub.MessageState {
		q, err := h.Queue(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]iothub.MessageState{}
		for _, m := range q {
			out[m.MessageID] = m.State
		}
		return out
	}
	if !waitFor(t, func() bool {
		s := states(a, "pi-1")
		return onPi1.refusals() > 0 && s["m1"] == iothub.StateEnqueued && s["m2"] == iothub.StateInvisible && s["m3"] == iothub.StateInvisible
	}) {
		t.Fatalf("pi-1 before the crash: %v; want m1 Enqueued after a failed redelivery, m2 and m3 Invisible", states(a, "pi-1"))
	}
	crash(a)

	again := openHub(t, t.TempDir(), cfg)
	for id, want := range map[string][]string{"pi-1": {"m1", "m2", "m3"}, "pi-2": {"m-pi-2"}} {
		s := states(again, id)
		for _, mid := range want {
			if s[mid] != iothub.StateEnqueued {
				t.Errorf("%s's %s when node a is back: %v; want Enqueued", id, mid, s[mid])
			}
		}
	}
}

// A deadline a node created (a send's expiry) is applied by the other nodes when that node dies
// before it: their poll sweeps for what the store holds, not only for what they made themselves.
func TestClusterDeadlineOfACrashedNodeIsAppliedByAnother(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	cfg := testConfig()
	cfg.Store, cfg.NodeID = url, "a"
	a, err := Open(context.Background(), t.TempDir(), cfg, Events{})
	if err != nil {
		t.Fatal(err)
	}
	b := openNode(t, url, "b")
	mustDevice(t, a, "pi-1")
	exp := time.Now().Add(1500 * time.Millisecond)
	mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: "m1", ExpiryTimeUTC: &exp})
	crash(a)
	if st := waitSettled(t, b, "pi-1", "m1"); st.Outcome != iothub.StatusExpired {
		t.Fatalf("m1 through node b after node a died: %+v; want Expired", st)
	}
}
