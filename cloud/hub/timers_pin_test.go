package hub

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// sweepOnce moves the clock by d and waits until the sweep that the move fires has run and the
// sweeper sleeps again. The sweeper must be idle and due within d.
func sweepOnce(t *testing.T, clk *manualClock, d time.Duration) {
	t.Helper()
	clk.Advance(d)
	sweeperAsleep(t, clk)
}

// A settled outcome is kept settled_retention and forgotten at the next prune after that, and
// prunes come every retention/2 when that is shorter than a minute: with a 10 s retention an
// outcome settled at T is still there at T+9 s and gone after the sweep at T+15 s.
func TestSettledOutcomeIsPrunedWithinHalfItsRetentionAfterIt(t *testing.T) {
	cfg := testConfig()
	cfg.SettledRetention = 10 * time.Second
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	idleSweeper(t, clk) // its next deadline: the prune 5 s after Open's first sweep
	sweepOnce(t, clk, 9*time.Second)
	if st, err := h.MessageStatus(context.Background(), "dev1", "m1"); err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("9 s after settling, within the 10 s retention: %+v, %v", st, err)
	}
	sweepOnce(t, clk, 6*time.Second)
	if st, err := h.MessageStatus(context.Background(), "dev1", "m1"); !errors.Is(err, ErrMessageNotFound) {
		t.Fatalf("15 s after settling, past the retention and a prune: %+v, %v; want it forgotten", st, err)
	}
}

// Records left unbatched when the hub stopped form a batch once the oldest has waited
// feedback_interval after the restart too, with no receiver and nothing else to do: only the
// first sweep's look at the unbatched records knows that deadline.
func TestUnbatchedRecordsFromBeforeARestartFormABatchAtTheInterval(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.FeedbackInterval = 20 * time.Second // well before the 1 min prune
	clk := newManualClock()
	clk.Pause()
	cfg.Clock = clk
	h := openHub(t, dir, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	recorded := clk.Now()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(5 * time.Second)
	h = openHub(t, dir, cfg)
	idleSweeper(t, clk)
	if batchAvailable(t, h, clk.Now()) {
		t.Fatal("batch formed before the interval")
	}
	sweepOnce(t, clk, 15*time.Second) // recorded + 20 s
	if !batchAvailable(t, h, clk.Now()) {
		t.Fatalf("no batch at %v, feedback_interval after the record of %v", clk.Now(), recorded)
	}
}

// The delivery round that finds a message whose TTL passed (before the sweep did) writes its
// Expired record and, when that fills a feedback batch, forms the batch in the same transaction:
// the batch's EnqueuedTimeUTC is the round's time, not that of the receive that comes later.
func TestDeliveryRoundFormsTheFeedbackBatchItsExpiryFills(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 1
	cfg.FeedbackInterval = time.Hour
	h, clk := clockHub(t, cfg) // paused: the sweep never gets to the TTL first
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "old", ExpiryTimeUTC: ptr(clk.Now().Add(2 * time.Second)), Ack: iothub.AckNegative})
	clk.Advance(2 * time.Second)
	round := clk.Now()
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "new"})
	c := newConn("dev1")
	h.Attach(c)
	if m := c.next(t); m.MessageID != "new" {
		t.Fatalf("delivered %q, whose TTL had passed", m.MessageID)
	}
	if b := wantBatchFormedAt(t, h, clk, round, "the delivery round"); len(b.Records) != 1 || b.Records[0].OriginalMessageID != "old" {
		t.Fatalf("batch %+v; want old's Expired record", b)
	}
}

// The abandon that uses up a message's last delivery dead-letters it and, when its record fills a
// feedback batch, forms the batch in the abandon's transaction (EnqueuedTimeUTC is the abandon's
// time, not the later receive's).
func TestAbandonOfTheLastDeliveryFormsTheFeedbackBatchItFills(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 1
	cfg.FeedbackInterval = time.Hour
	cfg.MaxDeliveryCount = 1
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckNegative})
	c := newConn("dev1")
	h.Attach(c)
	abandoned := clk.Now()
	settle(t, h, "dev1", c.next(t), iothub.DispositionAbandon, "")
	if b := wantBatchFormedAt(t, h, clk, abandoned, "the abandon"); len(b.Records) != 1 || b.Records[0].StatusCode != iothub.StatusDeliveryCountExceeded {
		t.Fatalf("batch %+v; want m1's DeliveryCountExceeded record", b)
	}
}

// A feedback batch that no service completes within feedback_ttl is dropped by the sweep at its
// expiry (a warning in the log): a receive after that gets nothing.
func TestFeedbackBatchPastItsTTLIsDropped(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackInterval = time.Hour
	cfg.FeedbackTTL = 10 * time.Second
	h, clk := batchOfOne(t, cfg)
	idleSweeper(t, clk)
	if !batchAvailable(t, h, clk.Now()) {
		t.Fatal("no batch after the settle that filled it")
	}
	sweepOnce(t, clk, 10*time.Second)
	if batchAvailable(t, h, clk.Now()) {
		t.Fatal("batch still available after its feedback_ttl")
	}
	nothingToReceive(t, h)
}

// batchOfOne is a hub on a paused clock (clockHub) with batches of one record, holding the batch
// of m1's Success record: m1 was sent with full ack, delivered and completed.
func batchOfOne(t *testing.T, cfg Config) (*Hub, *manualClock) {
	t.Helper()
	cfg.FeedbackBatchSize = 1 // a batch forms with the settle, not by the (paused) interval timer
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	return h, clk
}
