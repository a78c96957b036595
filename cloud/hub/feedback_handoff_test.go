package hub

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func handedCount(h *Hub) int {
	h.fbMu.Lock()
	defer h.fbMu.Unlock()
	return h.fbHand.count
}

func nothingToReceive(t *testing.T, h *Hub) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if b, err := h.ReceiveFeedback(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReceiveFeedback = %+v, %v; want nothing to receive", b, err)
	}
}

// The settle that writes the record a waiting receiver is waiting for also forms and locks its
// batch, in its own commit: the receiver needs no transaction of its own. The batch is what a
// receive would have locked: one record, delivery count 1, completable once.
func TestSettleHandsTheBatchToAWaitingReceiver(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	got := feedbackReceiver(t, h)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	b := <-got
	if b == nil || len(b.Records) != 1 || b.Records[0].OriginalMessageID != "m1" || !b.EnqueuedTimeUTC.Equal(clk.Now()) {
		t.Fatalf("batch %+v", b)
	}
	if n := handedCount(h); n != 1 {
		t.Fatalf("%d batches handed over by a settle, want 1 (the receiver formed it itself)", n)
	}
	nothingToReceive(t, h) // locked: not offered to anybody else
	if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
		t.Fatal(err)
	}
	if err := h.CompleteFeedback(context.Background(), b.LockToken); err == nil {
		t.Fatal("second complete of the handed batch succeeded")
	}
	if st, _ := h.Status(context.Background()); st.PendingFeedbackCount != 0 {
		t.Fatalf("pending feedback %d after completing the handed batch", st.PendingFeedbackCount)
	}
}

// Two receivers waiting, two records one after the other: each receiver gets one batch, none
// gets both, none is left waiting.
func TestHandOffServesWaitingReceiversOneBatchEach(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, _ := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	g1 := feedbackReceiver(t, h)
	g2 := feedbackReceiver(t, h)
	seen := map[string]bool{}
	for i := range 2 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), Ack: iothub.AckFull})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	for _, g := range []<-chan *iothub.FeedbackBatch{g1, g2} {
		select {
		case b := <-g:
			if b == nil || len(b.Records) != 1 || seen[b.Records[0].OriginalMessageID] {
				t.Fatalf("batch %+v (seen %v)", b, seen)
			}
			seen[b.Records[0].OriginalMessageID] = true
			if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("a waiting receiver got nothing (seen %v)", seen)
		}
	}
}

// A batch handed over after its receiver left (the receive ended between the settle's commit and
// the hand-over) is not lost: the next receive takes it at once with its lock, and once half its
// lock has passed it is left to expire and comes back from the store, delivery count 2.
func TestHandedBatchWithoutItsReceiverGoesToTheNextReceive(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	cfg.FeedbackLockTimeout = time.Minute
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	// A receiver registered but never taking what it is handed: what the settle commits goes
	// to it; it leaves; the batch is handed over again with nobody waiting.
	w := h.addWaiter()
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	hb, ok := h.removeWaiter(w)
	if !ok {
		t.Fatal("the settle handed nothing to the waiting receiver")
	}
	h.handOff(&hb)
	b, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || b.LockToken != hb.b.LockToken || len(b.Records) != 1 {
		t.Fatalf("next receive = %+v, %v; want the handed batch %s", b, err, hb.b.LockToken)
	}
	// Again, but the next receive comes late: the batch waits for its lock to expire.
	h.handOff(&hb)
	clk.Advance(cfg.FeedbackLockTimeout/2 + time.Second)
	nothingToReceive(t, h)
	clk.Advance(cfg.FeedbackLockTimeout)
	clk.Resume() // the sweep returns the expired lock to the store
	b, err = h.ReceiveFeedback(ctxT(t))
	if err != nil || b.LockToken == hb.b.LockToken || len(b.Records) != 1 || b.Records[0].OriginalMessageID != "m1" {
		t.Fatalf("receive after the lock expired = %+v, %v; want m1 under a new lock", b, err)
	}
	if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
		t.Fatal(err)
	}
}

// With no receiver waiting nothing is handed over: records pile up for the next receive, which
// takes them in one batch (batching under load is the receive's, not the settle's).
func TestNoHandOffWithoutAWaitingReceiver(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, _ := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := range 3 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), Ack: iothub.AckFull})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	b, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || len(b.Records) != 3 {
		t.Fatalf("receive = %+v, %v; want the three records in one batch", b, err)
	}
	if n := handedCount(h); n != 0 {
		t.Fatalf("%d batches handed over with no receiver waiting", n)
	}
}
