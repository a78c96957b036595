package hub

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Pins for the survivors of round.go's mutation run (docs/testing.md).

// At most max_in_flight messages are locked at once: a send to an attached device whose slots are
// all taken, with no round running, does not take the round for itself. Its message is stored
// Enqueued (never locked, delivery count 0) and waits for a settle; the state is read after Send
// returned, so no timing decides it.
func TestSendToDeviceWithNoFreeSlotStaysEnqueued(t *testing.T) {
	for _, max := range []int{1, 2} {
		t.Run(fmt.Sprint("max_in_flight ", max), func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxInFlight = max
			h := newTestHub(t, cfg)
			mustDevice(t, h, "dev1")
			c := newConn("dev1")
			h.Attach(c)
			var first *iothub.Message
			for i := range max {
				waitRoundIdle(t, h, "dev1")
				mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
				if m := c.next(t); i == 0 {
					first = m
				}
			}
			waitRoundIdle(t, h, "dev1") // every slot taken, no round running
			mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "over"})
			st, err := h.MessageStatus(context.Background(), "dev1", "over")
			if err != nil || st.State != iothub.StateEnqueued || st.DeliveryCount != 0 || st.LockedUntilUTC != nil {
				t.Fatalf("the send beyond max_in_flight %d: %+v, %v; want Enqueued, never delivered", max, st, err)
			}
			settle(t, h, "dev1", first, iothub.DispositionComplete, "")
			if m := c.next(t); m.MessageID != "over" {
				t.Fatalf("after the settle got %s, want over", m.MessageID)
			}
		})
	}
}

// A delivery that a send's own round hands to a connection that fails to take it goes back to
// the queue before Send returns (its delivery counted), not when its lock expires: the clock is
// held, so the lock never does.
func TestSendDeliveryThatFailsReturnsToQueueAtOnce(t *testing.T) {
	h, _ := clockHub(t, testConfig())
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	waitRoundIdle(t, h, "dev1") // the attach's round: the send takes its own
	c.setFail(errors.New("socket closed"))
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	st, err := h.MessageStatus(context.Background(), "dev1", "m1")
	if err != nil || st.State != iothub.StateEnqueued || st.DeliveryCount != 1 || st.LockedUntilUTC != nil {
		t.Fatalf("after the failed Deliver: %+v, %v; want Enqueued, delivery count 1, no lock", st, err)
	}
}
