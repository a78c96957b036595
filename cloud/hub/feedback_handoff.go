package hub

import (
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Handing a batch to a receiver that is already waiting. A waiting ReceiveFeedback would, once
// woken by the settle that wrote a record, run a transaction of its own to form and lock a batch:
// one more commit (an fsync) between the outcome and the sender that waits for it. Instead the
// transaction that writes the record forms and locks the batch in its own commit when a receiver
// is waiting and no batch is available, and hands it over in memory once committed. The batch is
// exactly what that receiver would have locked (same lock, delivery count, records); batching
// under load is unchanged, because a busy receiver is not waiting and records accumulate for its
// next receive. Single node only: in a cluster the receiver may be on another node.

// fbWaiter is one ReceiveFeedback blocked for feedback.
type fbWaiter struct {
	got chan handedBatch // cap 1; sent to under Hub.fbMu
}

// handedBatch is a batch locked for a waiting receiver by another transaction.
type handedBatch struct {
	b     *iothub.FeedbackBatch
	until time.Time // its lock's end
	at    time.Time // when it was handed over (StageFeedback)
}

// fbHandoff is guarded by Hub.fbMu.
type fbHandoff struct {
	waiters []*fbWaiter   // blocked receivers, oldest first
	ready   []handedBatch // handed over after their receiver left: the next receive takes them
	count   int           // batches handed over so far (tests)
}

// handOffWanted says, inside a transaction, whether a batch formed now would find a receiver.
func (h *Hub) handOffWanted() bool {
	if h.cl != nil {
		return false
	}
	h.fbMu.Lock()
	defer h.fbMu.Unlock()
	return len(h.fbHand.waiters) > 0 && len(h.fbHand.ready) == 0
}

// handOffPending forms a batch of the pending records and locks it for a waiting receiver (see
// above), unless an older batch is available (the receiver takes that one itself, oldest first).
func (h *Hub) handOffPending(tx storeTx, now time.Time, e *effects) error {
	if _, ok, err := tx.availableBatch(now); err != nil || ok {
		return err
	}
	id, err := tx.maxBatchID()
	if err != nil {
		return err
	}
	b := batchRow{ID: id + 1, EnqueuedAt: now, ExpiresAt: now.Add(h.cfg.FeedbackTTL)}
	k, err := tx.formBatch(b, h.cfg.FeedbackBatchSize)
	if err != nil || k == 0 {
		return err
	}
	recs, err := tx.batchRecords(b.ID)
	if err != nil {
		return err
	}
	token, until := newLockToken(), now.Add(h.cfg.FeedbackLockTimeout)
	if err := tx.lockBatch(b.ID, token, until, 1); err != nil {
		return err
	}
	e.wake(b.ExpiresAt)
	e.wake(until)
	e.handoff = &handedBatch{b: &iothub.FeedbackBatch{LockToken: token, EnqueuedTimeUTC: b.EnqueuedAt, Records: recs}, until: until}
	return nil
}

// handOff gives a committed, locked batch to the oldest waiting receiver, or keeps it for the next
// receive if every receiver left meanwhile (its lock expires as usual if none comes).
func (h *Hub) handOff(hb *handedBatch) {
	hb.at = time.Now()
	h.fbMu.Lock()
	h.fbHand.count++
	if len(h.fbHand.waiters) > 0 {
		w := h.fbHand.waiters[0]
		h.fbHand.waiters = h.fbHand.waiters[1:]
		w.got <- *hb
		h.fbMu.Unlock()
		return
	}
	h.fbHand.ready = append(h.fbHand.ready, *hb)
	h.fbMu.Unlock()
	// A receive between its own look and its registration as a waiter would miss it otherwise:
	// it waits on the signal it took before that look.
	h.feedbackReady()
}

// addWaiter registers a receiver about to block.
func (h *Hub) addWaiter() *fbWaiter {
	w := &fbWaiter{got: make(chan handedBatch, 1)}
	h.fbMu.Lock()
	h.fbHand.waiters = append(h.fbHand.waiters, w)
	h.fbMu.Unlock()
	h.fbWaiting.Add(1)
	return w
}

// removeWaiter unregisters w and returns the batch handed to it, if one was.
func (h *Hub) removeWaiter(w *fbWaiter) (handedBatch, bool) {
	h.fbWaiting.Add(-1)
	h.fbMu.Lock()
	defer h.fbMu.Unlock()
	for i, x := range h.fbHand.waiters {
		if x == w {
			h.fbHand.waiters = append(h.fbHand.waiters[:i], h.fbHand.waiters[i+1:]...)
			break
		}
	}
	select {
	case hb := <-w.got:
		return hb, true
	default:
		return handedBatch{}, false
	}
}

// takeReady returns a batch handed over after its receiver left, while at least half its lock
// remains (an older one is left to expire and be offered again from the store).
func (h *Hub) takeReady() (handedBatch, bool) {
	h.fbMu.Lock()
	defer h.fbMu.Unlock()
	for len(h.fbHand.ready) > 0 {
		hb := h.fbHand.ready[0]
		h.fbHand.ready = h.fbHand.ready[1:]
		if hb.until.Sub(h.now()) >= h.cfg.FeedbackLockTimeout/2 {
			return hb, true
		}
	}
	return handedBatch{}, false
}
