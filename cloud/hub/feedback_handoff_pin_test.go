package hub

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Pins for the survivors of feedback_handoff.go's mutation run (docs/testing.md).

// ackedOutcome sends a message with full acknowledgement and completes it: one feedback record
// pending for it.
func ackedOutcome(t *testing.T, h *Hub, c *recConn, mid string) {
	t.Helper()
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull})
	m := c.next(t)
	if m.MessageID != mid {
		t.Fatalf("delivered %s, want %s", m.MessageID, mid)
	}
	settle(t, h, "dev1", m, iothub.DispositionComplete, "")
}

func batchOf(t *testing.T, b *iothub.FeedbackBatch, mid string) {
	t.Helper()
	if b == nil || len(b.Records) != 1 || b.Records[0].OriginalMessageID != mid {
		t.Fatalf("batch %+v, want the one record of %s", b, mid)
	}
}

// attachedDev1 creates device dev1 and attaches a connection for it.
func attachedDev1(t *testing.T, h *Hub) *recConn {
	t.Helper()
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	return c
}

// receiveInOrder receives and completes one batch for each of mids, in that order.
func receiveInOrder(t *testing.T, h *Hub, mids ...string) {
	t.Helper()
	for _, mid := range mids {
		b, err := h.ReceiveFeedback(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		batchOf(t, b, mid)
		if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
			t.Fatal(err)
		}
	}
}

// Feedback batches are received oldest first. A waiting receiver is not handed a new batch while
// an older one is available (it was woken for that one and takes it itself): here batch 1 was
// formed (as the sweeper forms it when the batch window passes) after the receiver began to wait.
func TestHandOffNeverOvertakesAnAvailableBatch(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg)
	c := attachedDev1(t, h)
	ackedOutcome(t, h, c, "m1")
	w := h.addWaiter()
	if err := h.st.update(context.Background(), func(tx storeTx) error {
		id, err := tx.maxBatchID()
		if err != nil {
			return err
		}
		now := clk.Now()
		k, err := tx.formBatch(batchRow{ID: id + 1, EnqueuedAt: now, ExpiresAt: now.Add(h.cfg.FeedbackTTL)}, h.cfg.FeedbackBatchSize)
		if err == nil && k != 1 {
			err = fmt.Errorf("formed a batch of %d records, want 1", k)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ackedOutcome(t, h, c, "m2")
	if hb, ok := h.removeWaiter(w); ok {
		t.Fatalf("handed %+v to the waiting receiver while the older batch was available", hb.b)
	}
	receiveInOrder(t, h, "m1", "m2")
}

// A batch handed to a waiting receiver is newer than every batch formed before it: when the locks
// of both lapse, they come back oldest first.
func TestHandedBatchComesBackAfterOlderBatches(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	cfg.FeedbackLockTimeout = time.Minute
	h, clk := clockHub(t, cfg)
	c := attachedDev1(t, h)
	ackedOutcome(t, h, c, "m1")
	b1, err := h.ReceiveFeedback(ctxT(t)) // batch 1, locked and never completed
	if err != nil {
		t.Fatal(err)
	}
	batchOf(t, b1, "m1")
	got := feedbackReceiver(t, h)
	ackedOutcome(t, h, c, "m2")
	b2 := <-got // handed over by the settle; never completed either
	batchOf(t, b2, "m2")
	if n := handedCount(h); n != 1 {
		t.Fatalf("%d batches handed over, want 1", n)
	}
	clk.Advance(cfg.FeedbackLockTimeout + time.Second)
	clk.Resume() // the sweep returns both expired locks to the store
	receiveInOrder(t, h, "m1", "m2")
}

// On PostgreSQL a hub has several writers, so the records a hand-off counted can be batched by
// another transaction before it forms its own batch (formBatch then forms nothing): the
// hand-off then hands over nothing, never an empty batch.
func TestHandOffWithNothingLeftToBatchHandsNothing(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg)
	w := h.addWaiter()
	defer h.removeWaiter(w)
	if err := h.st.update(context.Background(), func(tx storeTx) error {
		var e effects
		if err := h.handOffPending(tx, clk.Now(), &e); err != nil {
			return err
		}
		if e.handoff != nil {
			return fmt.Errorf("handed over %+v with no record to batch", e.handoff.b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A receiver that gave up waiting (its context ended) takes nothing with it: the next record
// goes to the next receive, not to the receiver that left. The clock never moves, so no lock
// expiry can bring a batch lost to it back.
func TestReceiverThatLeftIsHandedNothing(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, _ := clockHub(t, cfg)
	c := attachedDev1(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := h.ReceiveFeedback(ctx)
		left <- err
	}()
	deadline := time.Now().Add(waitLimit)
	for h.fbWaiting.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the receiver never started waiting")
		}
		time.Sleep(time.Millisecond) // polling the hub's state, not standing in for it
	}
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("the receiver that gave up returned %v", err)
	}
	ackedOutcome(t, h, c, "m1")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	b, err := h.ReceiveFeedback(ctx2)
	if err != nil {
		t.Fatalf("the next receive: %v (the record went to the receiver that left)", err)
	}
	batchOf(t, b, "m1")
}

// A batch handed over after its receiver left is taken by the next receive while at least half
// its lock remains: with exactly half left it still is (one tick later it is not, the other
// test's case).
func TestHandedBatchWithExactlyHalfItsLockLeftIsTaken(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	cfg.FeedbackLockTimeout = time.Minute
	h, clk := clockHub(t, cfg)
	c := attachedDev1(t, h)
	w := h.addWaiter()
	ackedOutcome(t, h, c, "m1")
	hb, ok := h.removeWaiter(w)
	if !ok {
		t.Fatal("the settle handed nothing to the waiting receiver")
	}
	h.handOff(&hb) // its receiver left: kept for the next receive
	clk.Advance(cfg.FeedbackLockTimeout / 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := h.ReceiveFeedback(ctx)
	if err != nil || b.LockToken != hb.b.LockToken {
		t.Fatalf("receive with half the lock left = %+v, %v; want the handed batch %s", b, err, hb.b.LockToken)
	}
}
