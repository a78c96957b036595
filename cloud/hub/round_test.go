package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// enqueueFirst locks the new message for its first delivery only when asked to, when the owner
// it is given holds the device, and when none of the device's other messages is Enqueued: a
// locked (Invisible) older message does not hold it back, an Enqueued one does, and another
// device's queue does not matter. A full queue or an unknown device writes nothing.
func TestStoreEnqueueFirst(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		var epoch int64
		up(t, st, func(tx storeTx) error {
			for _, d := range []string{"d", "e", "own", "stale", "none", "nolock"} {
				if err := tx.insertDevice(deviceRow{ID: d, Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
					return err
				}
			}
			for _, d := range []string{"own", "stale"} {
				var err error
				if epoch, err = tx.claimDevice(d, "node-a", at(0)); err != nil {
					return err
				}
			}
			m := testMsg("e", 1) // Enqueued, another device
			return tx.insertMessage(&m)
		})
		n := 0
		enqueue := func(dev string, max int, l firstLock) (seq int64, pending int, found, locked bool) {
			t.Helper()
			n++
			up(t, st, func(tx storeTx) error {
				m := testMsg(dev, 0)
				m.MessageID = fmt.Sprint("m", n)
				var err error
				seq, pending, found, locked, err = tx.enqueueFirst(&m, max, l)
				if err == nil && seq != 0 && m.Seq != seq {
					t.Errorf("enqueueFirst returned seq %d but set m.Seq %d", seq, m.Seq)
				}
				return err
			})
			return seq, pending, found, locked
		}
		lock := firstLock{prefix: testPrefix("tok"), until: at(time.Minute)}
		if seq, _, _, locked := enqueue("d", 10, lock); seq != 1 || !locked {
			t.Fatalf("the first message of an empty queue: seq %d, locked %v; want 1, locked", seq, locked)
		}
		if seq, _, _, locked := enqueue("d", 10, lock); seq != 2 || !locked {
			t.Fatalf("a message behind a locked (Invisible) one: seq %d, locked %v; want 2, locked", seq, locked)
		}
		up(t, st, func(tx storeTx) error { return tx.requeue("d", 1) })
		if seq, _, _, locked := enqueue("d", 10, lock); seq != 3 || locked {
			t.Fatalf("a message behind an Enqueued one: seq %d, locked %v; it must not overtake it", seq, locked)
		}
		if seq, pending, found, locked := enqueue("d", 3, lock); seq != 0 || pending != 3 || !found || locked {
			t.Fatalf("a full queue: seq %d, pending %d, found %v, locked %v; want 0, 3, true, false", seq, pending, found, locked)
		}
		if seq, _, found, _ := enqueue("ghost", 10, lock); seq != 0 || found {
			t.Fatalf("an unknown device: seq %d, found %v", seq, found)
		}
		held := firstLock{o: owner{node: "node-a", epoch: epoch}, prefix: testPrefix("tok"), until: at(time.Minute)}
		if _, _, _, locked := enqueue("own", 10, held); !locked {
			t.Fatal("not locked although its owner holds the device")
		}
		stale := held
		stale.o.epoch = epoch - 1
		if _, _, _, locked := enqueue("stale", 10, stale); locked {
			t.Fatal("locked for an owner whose epoch is stale")
		}
		if _, _, _, locked := enqueue("none", 10, held); locked {
			t.Fatal("locked for an owner of a device no node holds")
		}
		if _, _, _, locked := enqueue("nolock", 10, firstLock{}); locked {
			t.Fatal("locked without being asked to")
		}
		see(t, st, func(tx storeTx) error {
			withID := func(m msgRow, id string) msgRow { m.MessageID = id; return m }
			locked := func(m msgRow, token string) msgRow {
				m.State, m.DeliveryCount, m.LockToken, m.LockedUntil = iothub.StateInvisible, 1, token, at(time.Minute)
				return m
			}
			want := map[string][]msgRow{
				"d":      {withID(testMsg("d", 0), "m1"), locked(withID(testMsg("d", 0), "m2"), testToken("tok", 2)), withID(testMsg("d", 0), "m3")},
				"own":    {locked(withID(testMsg("own", 0), "m6"), testToken("tok", 1))},
				"stale":  {withID(testMsg("stale", 0), "m7")},
				"none":   {withID(testMsg("none", 0), "m8")},
				"nolock": {withID(testMsg("nolock", 0), "m9")},
			}
			want["d"][0].DeliveryCount = 1 // requeued: its delivery count stays
			for dev, ws := range want {
				got, err := tx.pending(dev)
				if err != nil || len(got) != len(ws) {
					t.Fatalf("pending(%s) = %+v, %v; want %d messages", dev, got, err, len(ws))
				}
				for i := range got {
					ws[i].Seq = int64(i + 1)
					sameMsg(t, fmt.Sprintf("%s message %d", dev, i+1), got[i], ws[i])
				}
			}
			return nil
		})
	})
}

// A send to an attached device with a free slot and nothing waiting is handed to the connection
// before Send returns, locked for its first delivery with the lock timeout counted from the send.
// In a cluster too: the lock is then conditional on this node holding the device.
func TestSendToReadyDeviceDeliversAtOnce(t *testing.T) {
	t.Run("one node", func(t *testing.T) {
		cfg := testConfig()
		sendToReadyDevice(t, newTestHub(t, cfg), cfg)
	})
	t.Run("cluster node", func(t *testing.T) {
		h := openNode(t, pgtest.DB(t), "a")
		sendToReadyDevice(t, h, h.cfg)
	})
}

func sendToReadyDevice(t *testing.T, h *Hub, cfg Config) {
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
