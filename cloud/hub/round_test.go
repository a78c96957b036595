package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// insertFirst locks the new message for its first delivery only when none of the device's other
// messages is Enqueued: a locked (Invisible) older message does not hold it back, an Enqueued one
// does, and another device's queue does not matter.
func TestStoreInsertFirst(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		up(t, st, func(tx storeTx) error {
			for _, d := range []string{"d", "e"} {
				if err := tx.insertDevice(deviceRow{ID: d, Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
					return err
				}
			}
			m := testMsg("e", 1) // Enqueued, another device
			return tx.insertMessage(&m)
		})
		insert := func(seq int64) bool {
			t.Helper()
			var locked bool
			up(t, st, func(tx storeTx) error {
				m := testMsg("d", seq)
				var err error
				locked, err = tx.insertFirst(&m, fmt.Sprint("tok", seq), at(time.Minute))
				return err
			})
			return locked
		}
		if !insert(1) {
			t.Fatal("the first message of an empty queue was not locked")
		}
		if !insert(2) {
			t.Fatal("a message behind a locked (Invisible) one was not locked")
		}
		up(t, st, func(tx storeTx) error { return tx.requeue("d", 1) })
		if insert(3) {
			t.Fatal("a message behind an Enqueued one was locked: it would overtake it")
		}
		see(t, st, func(tx storeTx) error {
			want := []msgRow{testMsg("d", 1), testMsg("d", 2), testMsg("d", 3)}
			want[0].DeliveryCount = 1 // requeued: its delivery count stays
			want[1].State, want[1].DeliveryCount, want[1].LockToken, want[1].LockedUntil = iothub.StateInvisible, 1, "tok2", at(time.Minute)
			got, err := tx.pending("d")
			if err != nil || len(got) != 3 {
				t.Fatalf("pending = %+v, %v", got, err)
			}
			for i := range got {
				sameMsg(t, fmt.Sprintf("message %d", i+1), got[i], want[i])
			}
			return nil
		})
	})
}

// A send to an attached device with a free slot and nothing waiting is handed to the connection
// before Send returns, locked for its first delivery with the lock timeout counted from the send.
func TestSendToReadyDeviceDeliversAtOnce(t *testing.T) {
	cfg := testConfig()
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	waitRoundIdle(t, h, "dev1") // the attach's own round (it found nothing to deliver)
	r := mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m0"})
	select {
	case m := <-c.ch:
		if m.MessageID != "m0" || m.LockToken == "" {
			t.Fatalf("delivered %+v", m)
		}
		st, err := h.MessageStatus(context.Background(), "dev1", "m0")
		if err != nil || st.State != iothub.StateInvisible || st.DeliveryCount != 1 || st.LockedUntilUTC == nil {
			t.Fatalf("status of the delivered message: %+v, %v", st, err)
		}
		// Locked from the send's commit: at least the lock timeout after it was enqueued.
		if d := st.LockedUntilUTC.Sub(r.EnqueuedTimeUTC); d < cfg.LockTimeout || d > cfg.LockTimeout+waitLimit {
			t.Fatalf("locked until %v, enqueued %v: want the lock timeout %v after the send", st.LockedUntilUTC, r.EnqueuedTimeUTC, cfg.LockTimeout)
		}
		settle(t, h, "dev1", m, iothub.DispositionComplete, "")
	default:
		t.Fatal("the message was not handed to the connection by the time Send returned")
	}
	if st := waitSettled(t, h, "dev1", "m0"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
		t.Fatalf("m0: %+v", st)
	}
}

// A send never overtakes an Enqueued message the hub has not delivered yet, even when nothing in
// memory says one is waiting (here stored behind the hub's back, as a requeue whose kick has not
// been applied yet would be).
func TestSendDoesNotOvertakeAnEnqueuedMessage(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	if err := h.st.update(context.Background(), func(tx storeTx) error {
		seq, _, ok, err := tx.nextSeq("dev1", 100)
		if err != nil || !ok {
			return fmt.Errorf("nextSeq: %v, %v", ok, err)
		}
		m := testMsg("dev1", seq)
		m.MessageID, m.EnqueuedAt, m.ExpiresAt = "older", h.now(), h.now().Add(time.Hour)
		return tx.insertMessage(&m)
	}); err != nil {
		t.Fatal(err)
	}
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "newer"})
	for _, want := range []string{"older", "newer"} {
		m := c.next(t)
		if m.MessageID != want {
			t.Fatalf("delivered %s, want %s first", m.MessageID, want)
		}
		settle(t, h, "dev1", m, iothub.DispositionComplete, "")
	}
}

// waitRoundIdle waits until no delivery round runs for the device.
func waitRoundIdle(t *testing.T, h *Hub, id string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		h.mu.Lock()
		ds := h.devs[id]
		idle := ds != nil && !ds.running
		h.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: a delivery round still runs after %v", id, waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// A settle that frees the slot of a device with messages waiting hands the next one to the
// connection before Settle returns (its own transaction locked it), oldest first.
func TestSettleDeliversTheNextMessageAtOnce(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 1
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := range 3 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
	}
	m := c.next(t)
	if m.MessageID != "m0" {
		t.Fatalf("first delivery %s", m.MessageID)
	}
	for i := 1; i < 3; i++ {
		waitRoundIdle(t, h, "dev1") // the sends' round, which found no free slot
		c.none(t, 20*time.Millisecond)
		settle(t, h, "dev1", m, iothub.DispositionComplete, "")
		select {
		case m = <-c.ch:
		default:
			t.Fatalf("m%d was not handed to the connection by the time the settle of m%d returned", i, i-1)
		}
		if m.MessageID != fmt.Sprint("m", i) {
			t.Fatalf("after settling m%d got %s", i-1, m.MessageID)
		}
		if st, err := h.MessageStatus(context.Background(), "dev1", m.MessageID); err != nil || st.State != iothub.StateInvisible || st.DeliveryCount != 1 {
			t.Fatalf("%s: %+v, %v", m.MessageID, st, err)
		}
	}
	settle(t, h, "dev1", m, iothub.DispositionComplete, "")
	for i := range 3 {
		if st := waitSettled(t, h, "dev1", fmt.Sprint("m", i)); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
			t.Fatalf("m%d: %+v", i, st)
		}
	}
}
