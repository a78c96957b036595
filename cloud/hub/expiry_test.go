package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// clockHub is a hub on a manual clock, paused: no sweep runs until the test resumes the clock, so
// a test stands exactly on a deadline, or past it with the sweep not yet run.
func clockHub(t *testing.T, cfg Config) (*Hub, *manualClock) {
	t.Helper()
	clk := newManualClock()
	clk.Pause()
	cfg.Clock = clk
	return newTestHub(t, cfg), clk
}

func lockedUntil(t *testing.T, h *Hub, dev, mid string) time.Time {
	t.Helper()
	st, err := h.MessageStatus(context.Background(), dev, mid)
	if err != nil || st.LockedUntilUTC == nil {
		t.Fatalf("MessageStatus(%s): %+v, %v: want a lock", mid, st, err)
	}
	return *st.LockedUntilUTC
}

// A delivery is locked for exactly lock_timeout: still valid 1 ms before, lost at the deadline.
func TestLockLastsExactlyLockTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.LockTimeout = 7 * time.Second
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2"})
	delivered := clk.Now()
	c := newConn("dev1")
	h.Attach(c)
	m1, m2 := c.next(t), c.next(t)
	if got, want := lockedUntil(t, h, "dev1", "m1"), delivered.Add(7*time.Second); !got.Equal(want) {
		t.Fatalf("m1 locked until %v, want delivery + lock_timeout = %v", got, want)
	}
	clk.Advance(7*time.Second - time.Millisecond)
	settle(t, h, "dev1", m1, iothub.DispositionComplete, "") // 1 ms left: accepted
	clk.Advance(time.Millisecond)
	err := h.Settle(context.Background(), "dev1", m2.LockToken, iothub.DispositionComplete, "")
	wantCode(t, err, ErrLockLost, iothub.CodeDeviceMessageLockLost)
}

// Between the lock deadline and the sweep that returns the message to the queue, every
// disposition is refused: the message is not Success, Rejected or abandoned by a late device.
func TestSettleAfterLockDeadlineBeforeSweepIsLockLost(t *testing.T) {
	for _, d := range []iothub.Disposition{iothub.DispositionComplete, iothub.DispositionReject, iothub.DispositionAbandon} {
		t.Run(string(d), func(t *testing.T) {
			h, clk := clockHub(t, testConfig())
			mustDevice(t, h, "dev1")
			mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
			c := newConn("dev1")
			h.Attach(c)
			m := c.next(t)
			clk.Advance(testConfig().LockTimeout) // on the deadline; the sweeper has not run
			err := h.Settle(context.Background(), "dev1", m.LockToken, d, "late")
			wantCode(t, err, ErrLockLost, iothub.CodeDeviceMessageLockLost)
			st, err := h.MessageStatus(context.Background(), "dev1", "m1")
			if err != nil || st.State != iothub.StateInvisible || st.Outcome != "" || st.DeliveryCount != 1 {
				t.Fatalf("after a late %s: %+v, %v; want still Invisible, no outcome, 1 delivery", d, st, err)
			}
			clk.Resume() // the sweep returns it; it is delivered again
			if again := c.next(t); again.MessageID != "m1" || again.LockToken == m.LockToken {
				t.Fatalf("redelivery %+v", again)
			}
		})
	}
}

// A feedback batch's lock is exactly feedback_lock_timeout; after it, neither complete nor
// abandon is accepted, sweep or no sweep, and the batch is offered again.
func TestFeedbackLockExpiryBeforeSweepRefusesCompleteAndAbandon(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackLockTimeout = 3 * time.Second
	h, clk := batchOfOne(t, cfg)

	b1, err := h.ReceiveFeedback(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(3*time.Second - time.Millisecond)
	if err := h.AbandonFeedback(context.Background(), b1.LockToken); err != nil {
		t.Fatalf("abandon 1 ms before the lock deadline: %v", err)
	}
	b2, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || b2.LockToken == b1.LockToken || b2.Records[0].OriginalMessageID != "m1" {
		t.Fatalf("abandoned batch: %+v, %v", b2, err)
	}
	clk.Advance(3 * time.Second) // exactly on b2's deadline
	wantCode(t, h.CompleteFeedback(context.Background(), b2.LockToken), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	wantCode(t, h.AbandonFeedback(context.Background(), b2.LockToken), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	clk.Resume()
	b3, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || b3.LockToken == b2.LockToken || b3.Records[0].OriginalMessageID != "m1" {
		t.Fatalf("after the lock expired: %+v, %v", b3, err)
	}
	if err := h.CompleteFeedback(context.Background(), b3.LockToken); err != nil {
		t.Fatal(err)
	}
}

// A message whose TTL passed while the device was away is never delivered, even when the device
// connects before the sweeper has expired it: it is Expired, and the next message is delivered.
func TestDispatchSkipsMessageWhoseTTLPassedBeforeSweep(t *testing.T) {
	h, clk := clockHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "old", ExpiryTimeUTC: ptr(clk.Now().Add(2 * time.Second)), Ack: iothub.AckNegative})
	clk.Advance(2 * time.Second) // exactly its expiry
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "new"})
	c := newConn("dev1")
	h.Attach(c)
	if m := c.next(t); m.MessageID != "new" {
		t.Fatalf("delivered %q, whose TTL had passed", m.MessageID)
	}
	if st := waitSettled(t, h, "dev1", "old"); st.Outcome != iothub.StatusExpired || st.DeliveryCount != 0 {
		t.Fatalf("old: %+v, want Expired with no delivery", st)
	}
	clk.Resume()
	clk.Advance(testConfig().FeedbackInterval) // the record's batch forms by the interval
	recs := receiveRecords(t, h, 1)
	if recs[0].OriginalMessageID != "old" || recs[0].StatusCode != iothub.StatusExpired {
		t.Fatalf("feedback %+v", recs)
	}
}

// A batch forms as soon as feedback_batch_size records wait, not only past that size, and holds
// exactly that many.
func TestFeedbackBatchOfExactlyBatchSizeFormsAtOnce(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 3
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg) // paused: the interval never passes
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := range 3 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), Ack: iothub.AckPositive})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	b := wantBatchFormedAt(t, h, clk, clk.Now(), "the settle that filled it")
	if len(b.Records) != 3 {
		t.Fatalf("batch of feedback_batch_size records: %+v", b)
	}
	for i, r := range b.Records {
		if r.OriginalMessageID != fmt.Sprint("m", i) {
			t.Fatalf("record %d is %q", i, r.OriginalMessageID)
		}
	}
}

// More due items than one sweep takes (500) are all applied without waiting for another
// deadline: 501 messages past their TTL are all Expired after one clock step.
func TestSweepPastBatchLimitExpiresEverythingDue(t *testing.T) {
	cfg := testConfig()
	cfg.MaxQueueDepth = sweepBatch + 1
	h, clk := clockHub(t, cfg)
	clk.Resume()
	mustDevice(t, h, "dev1")
	exp := clk.Now().Add(2 * time.Second)
	for i := range sweepBatch + 1 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), ExpiryTimeUTC: &exp})
	}
	clk.Advance(2 * time.Second)
	for _, i := range []int{0, sweepBatch - 1, sweepBatch} {
		if st := waitSettled(t, h, "dev1", fmt.Sprint("m", i)); st.Outcome != iothub.StatusExpired {
			t.Fatalf("m%d: %+v", i, st)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// idleSweeper resumes the clock and waits until the sweeper has swept and sleeps until a future
// deadline, so what a test does next is the only thing that can arm it.
func idleSweeper(t *testing.T, clk *manualClock) {
	t.Helper()
	clk.Resume()
	sweeperAsleep(t, clk)
}

// sweeperAsleep waits until the sweeper's timer stands on a future deadline: the sweep in
// progress, if any, has run (it is the hub's only timer).
func sweeperAsleep(t *testing.T, clk *manualClock) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !clk.armedAfter() {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper never went to sleep")
		}
		time.Sleep(time.Millisecond) // polling the fake clock's state, not standing in for it
	}
}

// wantBatchFormedAt moves the clock on, receives the next feedback batch and checks it was formed
// at formed (its EnqueuedTimeUTC) by what, not by this receive (which would form one from pending
// records too), and returns it.
func wantBatchFormedAt(t *testing.T, h *Hub, clk *manualClock, formed time.Time, what string) *iothub.FeedbackBatch {
	t.Helper()
	clk.Advance(time.Second)
	b, err := h.ReceiveFeedback(ctxT(t))
	if err != nil {
		t.Fatalf("ReceiveFeedback: %v", err)
	}
	if !b.EnqueuedTimeUTC.Equal(formed) {
		t.Fatalf("batch formed at %v, not by %s at %v", b.EnqueuedTimeUTC, what, formed)
	}
	return b
}

// With no receiver waiting, records short of a full batch form one once the oldest has waited
// feedback_interval: the settle that created the record arms the timer for exactly then. (A
// receiver that is waiting forms one at once: feedback_test.go.)
func TestPartialFeedbackBatchFormsAfterInterval(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = 2 * time.Second // before the 5 s lock deadline, which also arms the sweeper
	h, clk := clockHub(t, cfg)
	idleSweeper(t, clk)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	clk.Advance(2*time.Second - time.Millisecond)
	if batchAvailable(t, h, clk.Now()) {
		t.Fatal("batch formed before the interval")
	}
	clk.Advance(time.Millisecond)
	deadline := time.Now().Add(waitLimit)
	for !batchAvailable(t, h, clk.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("no batch formed at the interval")
		}
		time.Sleep(time.Millisecond) // the sweeper runs on its own goroutine once the clock fires it
	}
	if recs := receiveRecords(t, h, 1); recs[0].OriginalMessageID != "m1" {
		t.Fatalf("records %+v", recs)
	}
}

// Records for more than one full batch, created in one transaction (a purge), all form batches in
// that transaction: none waits for the interval, and none for a receiver to ask (a receiver that
// finds no batch forms one from what is pending, so only the batch's EnqueuedTimeUTC, the time it
// was formed, tells the two apart: the clock moves on between the purge and the receives).
func TestPurgeFormsEveryFullFeedbackBatchAtOnce(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 2
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg) // paused: the interval never passes
	mustDevice(t, h, "dev1")
	for i := range 4 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), Ack: iothub.AckFull})
	}
	purged := clk.Now()
	if _, err := h.Purge(context.Background(), "dev1"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if b := wantBatchFormedAt(t, h, clk, purged, "the purge"); len(b.Records) != 2 {
			t.Fatalf("batch %d of 2 after purging 4: %+v", i+1, b)
		}
	}
}

// Every lock due in one sweep is returned by that sweep, not only the first.
func TestSweepReturnsEveryExpiredLock(t *testing.T) {
	h, clk := clockHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2"})
	c := newConn("dev1")
	h.Attach(c)
	c.next(t)
	c.next(t)
	clk.Resume()
	clk.Advance(testConfig().LockTimeout) // both locks expire together
	got := map[string]bool{c.next(t).MessageID: true, c.next(t).MessageID: true}
	if !got["m1"] || !got["m2"] {
		t.Fatalf("redelivered %v, want m1 and m2", got)
	}
}

// Every feedback batch whose lock is due in one sweep is offered again by that sweep.
func TestSweepReoffersEveryExpiredFeedbackLock(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 1
	cfg.FeedbackLockTimeout = 3 * time.Second
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for _, id := range []string{"m1", "m2"} {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: id, Ack: iothub.AckFull})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	for range 2 {
		if _, err := h.ReceiveFeedback(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	clk.Resume()
	clk.Advance(3 * time.Second)
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := h.ReceiveFeedback(ctx)
		cancel()
		if err != nil {
			t.Fatalf("batch %d of 2 after both locks expired: %v", i+1, err)
		}
	}
}
