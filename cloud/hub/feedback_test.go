package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// feedbackReceiver runs ReceiveFeedback in the background and returns once it is blocked waiting,
// so that what the test does next happens while a receiver is already there.
func feedbackReceiver(t *testing.T, h *Hub) <-chan *iothub.FeedbackBatch {
	t.Helper()
	before := h.fbWaiting.Load()
	out := make(chan *iothub.FeedbackBatch, 1)
	go func() {
		b, err := h.ReceiveFeedback(ctxT(t))
		if err != nil {
			t.Errorf("ReceiveFeedback: %v", err)
		}
		out <- b
	}()
	deadline := time.Now().Add(waitLimit)
	for h.fbWaiting.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("the receiver never started waiting")
		}
		time.Sleep(time.Millisecond) // polling the hub's state, not standing in for it
	}
	return out
}

// batchAvailable reports whether a feedback batch formed, without receiving (a receiver would
// form one itself).
func batchAvailable(t *testing.T, h *Hub, now time.Time) bool {
	t.Helper()
	var ok bool
	if err := h.view(context.Background(), func(tx storeTx) error {
		var err error
		_, ok, err = tx.availableBatch(now)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// A receiver already waiting gets a record as soon as it exists: the clock never moves, so the
// one-hour batch window cannot be what formed the batch.
func TestWaitingFeedbackReceiverGetsRecordWithoutTheInterval(t *testing.T) {
	for _, ack := range []iothub.AckMode{iothub.AckFull, iothub.AckPositive} {
		t.Run(string(ack), func(t *testing.T) {
			cfg := testConfig()
			cfg.FeedbackInterval = time.Hour
			h, clk := clockHub(t, cfg) // paused: no timer fires
			mustDevice(t, h, "dev1")
			c := newConn("dev1")
			h.Attach(c)
			got := feedbackReceiver(t, h)
			mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: ack, CorrelationID: "c1"})
			settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
			var b *iothub.FeedbackBatch
			select {
			case b = <-got:
			case <-time.After(waitLimit):
				t.Fatal("the waiting receiver got nothing: the record waits for the batch window")
			}
			if b == nil || len(b.Records) != 1 {
				t.Fatalf("batch %+v, want the one record", b)
			}
			r := b.Records[0]
			// Azure's field meanings: the batch's time is when it formed, the record's when the
			// outcome happened: both now, since the clock stood still.
			if r.OriginalMessageID != "m1" || r.StatusCode != iothub.StatusSuccess || r.DeviceID != "dev1" ||
				r.CorrelationID != "c1" || r.DeliveryCount != 1 || !r.EnqueuedTimeUTC.Equal(clk.Now()) ||
				!b.EnqueuedTimeUTC.Equal(clk.Now()) {
				t.Fatalf("record %+v in batch at %v, now %v", r, b.EnqueuedTimeUTC, clk.Now())
			}
			if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A waiting receiver is woken by a record, not by a settle that writes none (ack none, or
// positive and rejected): it keeps waiting, and then takes the record that does come.
func TestWaitingFeedbackReceiverIgnoresSettlesWithoutRecords(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	h, _ := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	got := feedbackReceiver(t, h)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "none", Ack: iothub.AckNone})
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "pos", Ack: iothub.AckPositive})
	settle(t, h, "dev1", c.next(t), iothub.DispositionReject, "bad")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "neg", Ack: iothub.AckNegative})
	settle(t, h, "dev1", c.next(t), iothub.DispositionReject, "bad pin")
	b := <-got
	if b == nil || len(b.Records) != 1 || b.Records[0].OriginalMessageID != "neg" ||
		b.Records[0].StatusCode != iothub.StatusRejected || b.Records[0].Reason != "bad pin" {
		t.Fatalf("batch %+v, want only neg's Rejected record", b)
	}
}

// Under load records still travel in batches: what piles up while no receiver waits (it is busy
// with the previous batch) forms full batches of feedback_batch_size, oldest first, when the
// receiver comes back — and nothing forms before then or before the interval.
func TestFeedbackPendingWhileNoReceiverWaitsFormsBatches(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 3
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := range 5 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), Ack: iothub.AckFull})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	// 3 of 5 made the one full batch; the other 2 wait: for the interval or for a receiver.
	b1, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || len(b1.Records) != 3 || b1.Records[0].OriginalMessageID != "m0" {
		t.Fatalf("first batch %+v, %v: want m0..m2", b1, err)
	}
	if batchAvailable(t, h, clk.Now()) {
		t.Fatal("a partial batch formed with no receiver and the interval not passed")
	}
	b2, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || len(b2.Records) != 2 || b2.Records[0].OriginalMessageID != "m3" || b2.Records[1].OriginalMessageID != "m4" {
		t.Fatalf("second batch %+v, %v: want m3, m4 at once", b2, err)
	}
	for _, b := range []*iothub.FeedbackBatch{b1, b2} {
		if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := h.Status(context.Background()); st.PendingFeedbackCount != 0 {
		t.Fatalf("pending feedback %d after completing both batches", st.PendingFeedbackCount)
	}
}
