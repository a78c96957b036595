package hub

import (
	"strconv"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A send to a device that is attached here, has a free delivery slot and nothing older waiting
// locks its message for delivery in its own transaction and hands it to the connection right after
// the commit. Without this every such command cost a delivery round of its own: a goroutine, a
// share of another commit (its statement locking the message) and the wait for that commit — the
// largest single item of the hub's CPU under load and one commit of a lone command's latency
// (docs/benchmarks.md, "Where the time goes: the hub, round 2").
//
// The send then is the device's delivery round, with a round's rules: it holds the attachment's
// delivery lock (sendMu) from the lock in the store to the hand-over, so a Detach waits for it
// and then returns the message to the queue like any delivered one; it runs only while no other
// round runs (devState.running), so FIFO order and MaxInFlight are kept as a round keeps them; and
// the store locks the message only when none of the device's messages is Enqueued (insertFirst:
// the check and the insert in one statement). The lock's expiry is taken from the transaction's
// clock, the delivery count is durable before the device can see the message, and a crash before
// the hand-over leaves a locked message that recovery (or the lock's expiry) returns to the queue,
// as for a round. Only on a store of this node alone: in a cluster, ownership of the device is
// checked in every round's transaction and the shortcut is left to the rounds.

// sendRound is a send's claim on its device's delivery round; the zero value claims nothing.
type sendRound struct {
	ds     *devState // the attachment whose round the send holds (nil: none)
	locked msgRow    // the message as locked, when ok
	ok     bool
}

// claim, inside the send's transaction, takes the device's delivery round when the device is
// attached here, ready for a delivery and no round runs. The transaction may run again (a group
// commit rerun): a claim already held is kept. It never blocks: the writer goroutine calls it, and
// a round waiting for the writer may hold sendMu.
func (r *sendRound) claim(h *Hub, deviceID string) *devState {
	if r.ds != nil || h.cl != nil {
		return r.ds
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devs[deviceID]
	if ds == nil || ds.detached || ds.broken || ds.running || h.closed() || len(ds.inflight) >= h.cfg.MaxInFlight {
		return nil
	}
	if !ds.sendMu.TryLock() {
		return nil
	}
	ds.running = true
	r.ds = ds
	return ds
}

// insert stores m (its Seq taken), locked for its first delivery when r holds the round and the
// device has nothing older waiting; otherwise Enqueued, and its device is kicked.
func (r *sendRound) insert(h *Hub, tx storeTx, m *msgRow, e *effects) error {
	r.ok = false
	if ds := r.claim(h, m.DeviceID); ds != nil {
		now := h.now()
		l := *m
		l.LockToken = newLockPrefix() + strconv.FormatInt(m.Seq, 10)
		l.LockedUntil = now.Add(h.cfg.LockTimeout)
		locked, err := tx.insertFirst(&l, l.LockToken, l.LockedUntil)
		if err != nil {
			return err
		}
		if locked {
			l.State, l.DeliveryCount = iothub.StateInvisible, 1
			r.locked, r.ok = l, true
			e.wake(l.LockedUntil)
			return nil
		}
	} else if err := tx.insertMessage(m); err != nil {
		return err
	}
	e.kickDevice(m.DeviceID)
	return nil
}

// finish runs after the send's transaction: the locked message is handed to the connection (when
// the transaction committed), then the round is over, or goes on as a dispatch round when the
// device was kicked meanwhile.
func (r *sendRound) finish(h *Hub, committed bool) {
	ds := r.ds
	if ds == nil {
		return
	}
	var back []string
	if committed && r.ok {
		began := time.Now()
		h.mu.Lock()
		if !ds.kicked {
			// The store held nothing Enqueued for the device when the message was locked: a send or
			// requeue committed since kicked it (kicked is set).
			ds.queued = false
		}
		h.mu.Unlock()
		back = h.deliverLocked(ds, []msgRow{r.locked}, began)
	}
	ds.sendMu.Unlock()
	h.mu.Lock()
	if ds.kicked && !ds.detached && !ds.broken && !h.closed() {
		h.wg.Add(1)
		h.mu.Unlock()
		go h.dispatch(ds)
	} else {
		ds.running = false
		h.mu.Unlock()
	}
	if len(back) > 0 {
		if err := h.releaseTokens(ds, back, false); err != nil && !isClosed(err) {
			h.log.Error("return undelivered messages to the queue", "device", ds.id, "err", err)
		}
	}
}
