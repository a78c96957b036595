package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// An explicit expiry may lie up to the grace (min(5 s, min_ttl/2)) outside [min_ttl, max_ttl]
// from now, and no further.
func TestExplicitExpiryBoundsWithGrace(t *testing.T) {
	cfg := testConfig() // min_ttl 1 s: grace 500 ms
	cfg.MaxTTL = time.Hour
	h, clk := clockHub(t, cfg)
	mustDevice(t, h, "dev1")
	now := clk.Now()
	for i, tc := range []struct {
		exp time.Time
		ok  bool
	}{
		{now.Add(500 * time.Millisecond), true}, // min_ttl − grace
		{now.Add(499 * time.Millisecond), false},
		{now.Add(time.Hour + 500*time.Millisecond), true}, // max_ttl + grace
		{now.Add(time.Hour + 501*time.Millisecond), false},
		{now.Add(time.Hour), true},
	} {
		_, err := h.Send(context.Background(), "dev1", iothub.SendRequest{MessageID: string(rune('a' + i)), ExpiryTimeUTC: &tc.exp})
		if (err == nil) != tc.ok {
			t.Errorf("expiry now+%v: %v, want accepted=%v", tc.exp.Sub(now), err, tc.ok)
		}
	}
}

// A message of exactly MaxMessageSize (body + system property values + application properties) is
// accepted; one byte more is refused as too large.
func TestMessageOfExactlyMaxSizeAccepted(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	overhead := len("m1") + len("/devices/dev1/messages/deviceBound") + len("full") + len("k") + len("v")
	send := func(mid string, body int) error {
		_, err := h.Send(context.Background(), "dev1", iothub.SendRequest{
			MessageID: mid, Ack: iothub.AckFull, Body: bytes.Repeat([]byte("x"), body),
			Properties: []iothub.AppProperty{{Name: "k", Value: "v"}},
		})
		return err
	}
	if err := send("m1", iothub.MaxMessageSize-overhead); err != nil {
		t.Fatalf("message of exactly %d bytes: %v", iothub.MaxMessageSize, err)
	}
	err := send("m2", iothub.MaxMessageSize-overhead+1)
	var ie *iothub.Error
	if !errors.As(err, &ie) || ie.Code != iothub.CodeMessageTooLarge {
		t.Fatalf("message of %d bytes: %v, want MessageTooLarge", iothub.MaxMessageSize+1, err)
	}
}

// Only an Invisible message has a lock: once abandoned it shows none.
func TestAbandonedMessageShowsNoLock(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	c := newConn("dev1")
	h.Attach(c)
	m := c.next(t)
	if st, _ := h.MessageStatus(context.Background(), "dev1", "m1"); st.LockedUntilUTC == nil {
		t.Fatalf("delivered message shows no lock: %+v", st)
	}
	h.Detach(c) // back to Enqueued at once
	st, err := h.MessageStatus(context.Background(), "dev1", "m1")
	if err != nil || st.State != iothub.StateEnqueued || st.LockedUntilUTC != nil {
		t.Fatalf("after the lock of %s was returned: %+v, %v; want Enqueued without a lock", m.MessageID, st, err)
	}
}

// The queue of a device that does not exist is an error, not an empty list.
func TestQueueOfUnknownDeviceIsNotFound(t *testing.T) {
	h := newTestHub(t, testConfig())
	if q, err := h.Queue(context.Background(), "nope"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("Queue(unknown) = %v, %v; want ErrDeviceNotFound", q, err)
	}
}

// max_in_flight holds all along, not only for the first deliveries: each settle frees exactly one
// slot.
func TestMaxInFlightHoldsAfterEachSettle(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 3
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	for i := range 8 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
	}
	c := newConn("dev1")
	h.Attach(c)
	held := []*iothub.Message{c.next(t), c.next(t), c.next(t)}
	for next := 3; next < 6; next++ {
		settle(t, h, "dev1", held[0], iothub.DispositionComplete, "")
		held = held[1:]
		d := c.next(t)
		if d.MessageID != fmt.Sprint("m", next) {
			t.Fatalf("after a settle got %s, want m%d", d.MessageID, next)
		}
		held = append(held, d)
		c.none(t, 50*time.Millisecond) // one settle, one slot
	}
}

// A message sent while every delivery slot is taken is delivered once a slot frees: the dispatcher
// that found no slot does not stay marked running.
func TestSendWhileInFlightFullIsDeliveredAfterSettle(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 1
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m0"})
	m0 := c.next(t)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"}) // kicks the dispatcher: no free slot
	c.none(t, 50*time.Millisecond)
	settle(t, h, "dev1", m0, iothub.DispositionComplete, "")
	if m1 := c.next(t); m1.MessageID != "m1" {
		t.Fatalf("got %s, want m1", m1.MessageID)
	}
}

// A delivery the connection fails to take goes back to the queue at once, not when its lock
// expires (the clock is held: the lock never does), and so does every message locked in the same
// round after it: the connection gets nothing more.
func TestFailedDeliveryReturnsToQueueAtOnce(t *testing.T) {
	h, _ := clockHub(t, testConfig())
	mustDevice(t, h, "dev1")
	ids := []string{"m1", "m2", "m3"} // m2 and m3 locked in the same round, after the failure
	for _, id := range ids {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: id})
	}
	c := newConn("dev1")
	c.setFail(errors.New("socket closed"))
	h.Attach(c)
	deadline := time.Now().Add(waitLimit)
	for {
		var got []iothub.MessageStatus
		back := 0
		for _, id := range ids {
			st, err := h.MessageStatus(context.Background(), "dev1", id)
			if err == nil && st.State == iothub.StateEnqueued && (id != "m1" || st.DeliveryCount == 1) {
				back++
			}
			got = append(got, st)
		}
		if back == len(ids) {
			if n := c.refusals(); n != 1 {
				t.Fatalf("%d deliveries tried on the failed connection; want 1", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a failed Deliver: %+v; want all three Enqueued, m1 with its delivery counted", got)
		}
		time.Sleep(time.Millisecond) // polling the state under test
	}
}
