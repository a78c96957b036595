package hub

import (
	"errors"
	"strconv"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A send or a settle can be its device's delivery round. A send to a device that is attached
// here, has a free delivery slot and nothing older waiting locks its message in its own
// transaction; a settle that frees a slot of a device with messages waiting locks the next ones in
// its own transaction. Either hands them to the connection right after the commit. Otherwise
// every such delivery cost a round of its own: a goroutine, a share of another commit (the
// statement locking the messages) and the wait for that commit — the largest single item of the
// hub's CPU under load and one commit of a command's latency (docs/benchmarks.md, "Where the time
// goes: the hub, round 2").
//
// Such a round keeps a round's rules: it holds the attachment's delivery lock (sendMu) from the
// lock in the store to the hand-over, so a Detach waits for it and then returns the messages to
// the queue like any delivered ones; it is taken only while no other round runs
// (devState.running), so FIFO order and MaxInFlight are kept as a round keeps them; a send's
// message is locked only when none of the device's messages is Enqueued (enqueueFirst: on SQLite
// the check and the insert are one statement, on PostgreSQL one function call), a settle locks the
// oldest Enqueued (lockNext). The lock's expiry is taken from the transaction's clock, the delivery
// count is durable before the device can see the message, and a crash before the hand-over leaves
// locked messages that recovery (or the lock's expiry) returns to the queue, as for a round. In a
// cluster the lock is conditional on this node holding the device at the attachment's epoch,
// checked in the same transaction as a round checks it (the session row stays locked until the
// commit); a send that finds the device taken over stores its message Enqueued and kicks, and the
// round that runs then finds the session lost.

// heldRound is a send's or settle's claim on its device's delivery round; the zero value claims
// nothing.
type heldRound struct {
	ds     *devState // the attachment whose round is held (nil: none)
	free   int       // slots the round may fill
	locked []msgRow  // locked by the transaction's last run, in sequence order
	// drained: after the transaction the store held nothing Enqueued for the device that the round
	// did not lock; again: messages it found had expired, so their slots are free again.
	drained, again bool
}

// claim, inside the transaction, takes the device's delivery round when the device is attached
// here and no round runs, and free (counted in memory) is positive. The transaction may run again
// (a group commit rerun): a claim already held is kept. It never blocks: the writer goroutine
// calls it, and a round waiting for the writer may hold sendMu. want says whether the device is
// worth a round (a settle's device may have nothing queued).
func (r *heldRound) claim(h *Hub, deviceID string, free func(*devState) int, want func(*devState) bool) *devState {
	if r.ds != nil {
		return r.ds
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devs[deviceID]
	if ds == nil || ds.detached || ds.broken || ds.running || h.closed() || !want(ds) {
		return nil
	}
	n := free(ds)
	if n <= 0 || !ds.sendMu.TryLock() {
		return nil
	}
	ds.running = true
	r.ds, r.free = ds, n
	return ds
}

// enqueue takes m's sequence number and stores it when fewer than maxPending of its device's
// messages are pending (tx.enqueue's results): locked for its first delivery when r takes the
// device's round, this node holds the device and nothing older waits (tx.enqueueFirst);
// otherwise Enqueued, and its device is kicked.
func (r *heldRound) enqueue(h *Hub, tx storeTx, m *msgRow, maxPending int, e *effects) (seq int64, pending int, found bool, err error) {
	r.locked, r.drained, r.again = nil, false, false
	free := func(ds *devState) int { return h.cfg.MaxInFlight - len(ds.inflight) }
	always := func(*devState) bool { return true }
	var l firstLock
	if ds := r.claim(h, m.DeviceID, free, always); ds != nil {
		l = firstLock{o: h.owner(ds), prefix: newLockPrefix(), until: h.now().Add(h.cfg.LockTimeout)}
	}
	seq, pending, found, locked, err := tx.enqueueFirst(m, maxPending, l)
	if err != nil || seq == 0 {
		return seq, pending, found, err
	}
	if !locked {
		e.kickDevice(m.DeviceID)
		return seq, pending, found, nil
	}
	d := *m
	d.State, d.DeliveryCount = iothub.StateInvisible, 1
	d.LockToken, d.LockedUntil = l.prefix+strconv.FormatInt(seq, 10), l.until
	r.locked, r.drained = []msgRow{d}, true
	e.wake(l.until)
	return seq, pending, found, nil
}

// next, in a settle's transaction after the message under token left the queue, locks the
// device's next Enqueued messages into the slots free once it is settled, when the device may
// have some (devState.queued) and r takes its round.
func (r *heldRound) next(h *Hub, tx storeTx, deviceID, token string, e *effects) error {
	r.locked, r.drained, r.again = nil, false, false
	free := func(ds *devState) int {
		n := h.cfg.MaxInFlight - len(ds.inflight)
		if _, ok := ds.inflight[token]; ok {
			n++ // the settle frees it
		}
		return n
	}
	queued := func(ds *devState) bool { return ds.queued }
	if r.claim(h, deviceID, free, queued) == nil {
		return nil
	}
	e.round = deviceID
	var err error
	r.locked, r.again, err = h.lockRound(tx, deviceID, h.owner(r.ds), r.free, e)
	if errors.Is(err, errFenced) {
		// The settle itself was allowed (its own check passed), but this attachment is not the
		// device's session any more (it was taken over since): its rounds find out and stop.
		r.locked, r.again = nil, false
		e.round = ""
		return nil
	} else if err != nil {
		return err
	}
	r.drained = len(r.locked) < r.free
	return nil
}

// finish runs after the transaction: what it locked is handed to the connection (when the
// transaction committed), then the round is over, or goes on as a dispatch round when the device
// was kicked meanwhile.
func (r *heldRound) finish(h *Hub, committed bool) {
	ds := r.ds
	if ds == nil {
		return
	}
	var back []string
	if committed {
		h.mu.Lock()
		switch {
		case r.again:
			ds.kicked = true
		case r.drained && !ds.kicked:
			// A send or requeue committed since would have kicked the device (kicked set).
			ds.queued = false
		}
		h.mu.Unlock()
		back = h.deliverLocked(ds, r.locked, time.Now())
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
