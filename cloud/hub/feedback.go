package hub

import (
	"context"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// formBatches groups unbatched feedback records into batches: full batches of FeedbackBatchSize
// at once, and whatever is left once its oldest record waited FeedbackInterval. It arms the timer
// for the next interval.
func (h *Hub) formBatches(tx storeTx, now time.Time, e *effects) error {
	return h.form(tx, now, false, e)
}

// form is formBatches; with receiving set (a receiver is asking for feedback and no batch is
// available) whatever is pending forms batches now instead of waiting out FeedbackInterval. The
// interval exists so that records travel in batches, not to delay a receiver that is already
// there: under load the receiver is busy with the previous batch while records accumulate, so
// the next one is full-sized again (the way group commit batches without a timer).
func (h *Hub) form(tx storeTx, now time.Time, receiving bool, e *effects) error {
	n, oldest, err := tx.unbatched()
	if err != nil || n == 0 {
		return err
	}
	due := receiving || !oldest.Add(h.cfg.FeedbackInterval).After(now)
	for n >= h.cfg.FeedbackBatchSize || (n > 0 && due) {
		id, err := tx.maxBatchID()
		if err != nil {
			return err
		}
		b := batchRow{ID: id + 1, EnqueuedAt: now, ExpiresAt: now.Add(h.cfg.FeedbackTTL)}
		k, err := tx.formBatch(b, h.cfg.FeedbackBatchSize)
		if err != nil {
			return err
		}
		n -= k
		e.feedback = true
		e.wake(b.ExpiresAt)
		if k == 0 {
			break
		}
	}
	if n > 0 && !due {
		e.wake(oldest.Add(h.cfg.FeedbackInterval)) // in case no batch is handed over below
		// (Never for a receiver: receiving makes every pending record due above.)
		if e.handoff == nil && h.handOffWanted() {
			return h.handOffPending(tx, now, e)
		}
	}
	return nil
}

// fbSignal is one wake-up of the feedback receivers: ch is closed at at.
type fbSignal struct {
	ch chan struct{}
	at time.Time // set before ch is closed (StageFeedback measures from it)
}

func newFBSignal() *fbSignal { return &fbSignal{ch: make(chan struct{})} }

// feedbackReady wakes every ReceiveFeedback waiting: a batch became available, or a record a
// waiting receiver forms one from (finish).
func (h *Hub) feedbackReady() {
	h.fbMu.Lock()
	h.fbCh.at = time.Now()
	close(h.fbCh.ch)
	h.fbCh = newFBSignal()
	h.fbMu.Unlock()
}

func (h *Hub) feedbackChan() *fbSignal {
	h.fbMu.Lock()
	defer h.fbMu.Unlock()
	return h.fbCh
}

// ReceiveFeedback locks and returns the next feedback batch (oldest first), blocking until one is
// ready or ctx ends (then nil, ctx.Err()). With no batch available, records already pending form
// one at once (form): a receiver that is there does not wait for the batch window. The batch
// stays locked for FeedbackLockTimeout; after that, or on AbandonFeedback, it is offered again
// until FeedbackMaxDeliveryCount deliveries.
func (h *Hub) ReceiveFeedback(ctx context.Context) (*iothub.FeedbackBatch, error) {
	var woken time.Time // when the wake-up this receive waited for came (zero: it did not wait)
	for {
		// The signal first: a batch handed over after takeReady looked closes it (handOff).
		sig := h.feedbackChan()
		if hb, ok := h.takeReady(); ok {
			return hb.b, nil
		}
		var fb *iothub.FeedbackBatch
		err := h.update(ctx, func(tx storeTx, e *effects) error {
			fb = nil
			now := h.now()
			b, ok, err := tx.availableBatch(now)
			if err == nil && !ok {
				if err = h.form(tx, now, true, e); err == nil {
					b, ok, err = tx.availableBatch(now)
				}
			}
			if err != nil || !ok {
				return err
			}
			recs, err := tx.batchRecords(b.ID)
			if err != nil {
				return err
			}
			b.LockToken, b.LockedUntil = newLockToken(), now.Add(h.cfg.FeedbackLockTimeout)
			if err := tx.lockBatch(b.ID, b.LockToken, b.LockedUntil, b.DeliveryCount+1); err != nil {
				return err
			}
			e.wake(b.LockedUntil)
			fb = &iothub.FeedbackBatch{LockToken: b.LockToken, EnqueuedTimeUTC: b.EnqueuedAt, Records: recs}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if fb != nil {
			if !woken.IsZero() {
				h.stage(StageFeedback, woken)
			}
			return fb, nil
		}
		w := h.addWaiter()
		var end error
		var hb handedBatch
		handed := false
		select {
		case hb = <-w.got:
			handed = true
		case <-sig.ch:
			woken = sig.at
		case <-ctx.Done():
			end = ctx.Err()
		case <-h.done:
			end = ErrClosed
		}
		// A batch handed over is this receiver's, whatever else woke it: its lock is taken.
		if x, ok := h.removeWaiter(w); ok {
			hb, handed = x, true
		}
		if handed {
			h.stage(StageFeedback, hb.at)
			return hb.b, nil
		}
		if end != nil {
			return nil, end
		}
	}
}

func errFeedbackLockLost(token string) error {
	return coded(ErrLockLost, iothub.CodeDeviceMessageLockLost,
		"feedback lock token %q is unknown or its lock expired (receive the batch again)", token)
}

// CompleteFeedback deletes a received batch; ErrLockLost after its lock expired.
func (h *Hub) CompleteFeedback(ctx context.Context, lockToken string) error {
	return h.update(ctx, func(tx storeTx, e *effects) error {
		b, ok, err := tx.batchByToken(lockToken)
		if err != nil {
			return err
		}
		if !ok || !b.LockedUntil.After(h.now()) {
			return errFeedbackLockLost(lockToken)
		}
		return tx.deleteBatch(b.ID)
	})
}

// AbandonFeedback makes a received batch available again (or drops it once it reached
// FeedbackMaxDeliveryCount deliveries); ErrLockLost after its lock expired.
func (h *Hub) AbandonFeedback(ctx context.Context, lockToken string) error {
	return h.update(ctx, func(tx storeTx, e *effects) error {
		b, ok, err := tx.batchByToken(lockToken)
		if err != nil {
			return err
		}
		if !ok || !b.LockedUntil.After(h.now()) {
			return errFeedbackLockLost(lockToken)
		}
		return h.unlockBatch(tx, b, e)
	})
}

// unlockBatch offers a batch again, or drops it after its last delivery.
func (h *Hub) unlockBatch(tx storeTx, b batchRow, e *effects) error {
	if b.DeliveryCount >= h.cfg.FeedbackMaxDeliveryCount {
		h.log.Warn("feedback batch dropped: max delivery count reached", "batch", b.ID, "deliveries", b.DeliveryCount)
		return tx.deleteBatch(b.ID)
	}
	if err := tx.unlockBatch(b.ID); err != nil {
		return err
	}
	e.feedback = true
	return nil
}
