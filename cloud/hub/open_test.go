package hub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/logtest"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// A cluster node started without a node id is named after its host: the name `c2d hub status`
// lists and a device's owner row carries.
func TestClusterNodeIDDefaultsToTheHostName(t *testing.T) {
	parallel(t)
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Fatalf("os.Hostname: %q, %v", host, err)
	}
	cfg := testConfig()
	cfg.Store = pgtest.DB(t)
	h := openHub(t, t.TempDir(), cfg)
	st, err := h.Status(context.Background())
	if err != nil || st.Node != host || len(st.Nodes) != 1 || st.Nodes[0].NodeID != host {
		t.Fatalf("status: %+v, %v; want node %q", st, err, host)
	}
}

// Only the system clock is replaced by the database's on a shared store: a clock given in the
// configuration (a test's) is the one the hub's times come from.
func TestSharedStoreKeepsAGivenClock(t *testing.T) {
	parallel(t)
	clk := newManualClock()
	cfg := testConfig()
	cfg.Store, cfg.NodeID, cfg.Clock = pgtest.DB(t), "a", clk
	h := openHub(t, t.TempDir(), cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	st, err := h.MessageStatus(context.Background(), "dev1", "m1")
	if err != nil || !st.EnqueuedTimeUTC.Equal(clk.Now()) {
		t.Fatalf("m1: %+v, %v; want enqueued at the given clock's %v", st, err, clk.Now())
	}
}

// After a restart the hub logs once what recovery did — messages requeued, dead-lettered,
// feedback batches unlocked — and nothing when there was nothing to recover.
func TestRecoveryLogSaysWhatItDid(t *testing.T) {
	dir := t.TempDir()
	clk := newManualClock()
	clk.Pause()
	open := func() (*Hub, *logtest.Recorder) {
		t.Helper()
		logs := &logtest.Recorder{}
		cfg := testConfig()
		cfg.Clock, cfg.Logger = clk, logs.Logger()
		return openHub(t, dir, cfg), logs
	}
	const msg = "recovered after restart"
	want := func(logs *logtest.Recorder, requeued, dead, unlocked int) {
		t.Helper()
		got := logs.With(msg)
		if len(got) != 1 || fmt.Sprint(got[0]["requeued"]) != fmt.Sprint(requeued) || fmt.Sprint(got[0]["deadLettered"]) != fmt.Sprint(dead) ||
			fmt.Sprint(got[0]["feedbackBatchesUnlocked"]) != fmt.Sprint(unlocked) {
			t.Fatalf("%q records %v; want one with requeued=%d deadLettered=%d feedbackBatchesUnlocked=%d", msg, got, requeued, dead, unlocked)
		}
	}

	// Three deliveries in flight at the crash; b1's and b2's TTL passes while the hub is down.
	h, _ := open()
	mustDevice(t, h, "dev1")
	exp := clk.Now().Add(2 * time.Second)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "a"})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "b1", ExpiryTimeUTC: &exp})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "b2", ExpiryTimeUTC: &exp})
	c := newConn("dev1")
	h.Attach(c)
	c.next(t)
	c.next(t)
	c.next(t)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Second)
	h, logs := open()
	want(logs, 1, 2, 0)

	// A feedback batch locked by a service at the crash.
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "f", Ack: iothub.AckFull})
	if _, err := h.Purge(context.Background(), "dev1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReceiveFeedback(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h, logs = open()
	want(logs, 0, 0, 1)

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	_, logs = open()
	if got := logs.With(msg); len(got) != 0 {
		t.Fatalf("nothing to recover, yet %q: %v", msg, got)
	}
}

// A delivery whose lock expires on its last delivery is dead-lettered, and the in-flight slot it
// held goes to the next message at once: with max_in_flight 1, the board is not left waiting for
// an unrelated kick.
func TestDeadLetteredDeliveryFreesItsSlot(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight, cfg.MaxDeliveryCount = 1, 1
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2"})
	c := newConn("dev1")
	h.Attach(c)
	if m := c.next(t); m.MessageID != "m1" {
		t.Fatalf("first delivery %s", m.MessageID)
	}
	clk.Advance(cfg.LockTimeout)
	clk.Resume() // the sweep: m1 used its one delivery
	if m := c.next(t); m.MessageID != "m2" {
		t.Fatalf("after m1 was dead-lettered, delivered %s", m.MessageID)
	}
	if st := waitSettled(t, h, "dev1", "m1"); st.Outcome != iothub.StatusDeliveryCountExceeded {
		t.Fatalf("m1: %+v", st)
	}
}

// A wait that ended (its context, or the hub closing) leaves nothing behind: a hub that answers
// months of `c2d send --wait` that time out does not keep a waiter for each.
func TestEndedWaitsLeaveNoWaiter(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 2 {
		if _, err := h.WaitSettled(ctx, "dev1", "m1"); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitSettled: %v, want context.Canceled", err)
		}
	}
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	if len(h.waiters) != 0 {
		t.Fatalf("waiters left after every wait ended: %v", h.waiters)
	}
}

// waitRegistered returns once a WaitSettled for dev/mid is registered, so that what the test does
// next happens while it waits.
func waitRegistered(t *testing.T, h *Hub, dev, mid string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		h.waitMu.Lock()
		w := h.waiters[waitKey{dev, mid}]
		h.waitMu.Unlock()
		if w != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no WaitSettled registered for %s/%s", dev, mid)
		}
		runtime.Gosched()
	}
}

// One wait on a message ending does not end another's: the second still returns at the settle.
func TestWaitOutlivesAnotherWaitOnTheSameMessage(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	got := make(chan iothub.MessageStatus, 1)
	go func() {
		st, err := h.WaitSettled(ctxT(t), "dev1", "m1")
		if err != nil {
			st.Reason = err.Error()
		}
		got <- st
	}()
	waitRegistered(t, h, "dev1", "m1")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.WaitSettled(ended, "dev1", "m1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitSettled on an ended context: %v", err)
	}
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	if st := <-got; st.Outcome != iothub.StatusSuccess {
		t.Fatalf("the wait that was still running saw %+v", st)
	}
}

// Deleting a device ends the waits on its messages at once, with the device's absence; waits on
// other devices' messages go on.
func TestDeleteDeviceEndsWaitsOnItsMessages(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustDevice(t, h, "dev2")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	mustSend(t, h, "dev2", iothub.SendRequest{MessageID: "m2"})
	wait := func(dev, mid string) <-chan error {
		ch := make(chan error, 1)
		go func() {
			_, err := h.WaitSettled(ctxT(t), dev, mid)
			ch <- err
		}()
		waitRegistered(t, h, dev, mid)
		return ch
	}
	w1, w2 := wait("dev1", "m1"), wait("dev2", "m2")
	if err := h.DeleteDevice(context.Background(), "dev1", "*"); err != nil {
		t.Fatal(err)
	}
	if err := <-w1; err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on the deleted device's message: %v, want it ended by the deletion", err)
	}
	select {
	case err := <-w2:
		t.Fatalf("wait on another device's message ended: %v", err)
	default:
	}
	c := newConn("dev2")
	h.Attach(c)
	settle(t, h, "dev2", c.next(t), iothub.DispositionComplete, "")
	if err := <-w2; err != nil {
		t.Fatalf("wait on dev2's message after its settle: %v", err)
	}
}

// A wait whose context ended before the hub could read the message (a busy hub, or a caller's
// deadline already spent) still tells the caller where the message is, with the context's error;
// a message already settled is reported settled, with no error; an unknown one as not found.
func TestEndedWaitStillReportsWhereTheMessageIs(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "done"})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	h.Detach(c)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "pending"})
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	st, err := h.WaitSettled(ended, "dev1", "pending")
	if !errors.Is(err, context.Canceled) || st.MessageID != "pending" || st.State != iothub.StateEnqueued {
		t.Fatalf("ended wait on a pending message = %+v, %v; want it Enqueued with context.Canceled", st, err)
	}
	if st, err := h.WaitSettled(ended, "dev1", "done"); err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("ended wait on a settled message = %+v, %v; want Success and no error", st, err)
	}
	if _, err := h.WaitSettled(ended, "dev1", "nope"); !errors.Is(err, ErrMessageNotFound) {
		t.Fatalf("ended wait on an unknown message: %v; want ErrMessageNotFound", err)
	}
}
