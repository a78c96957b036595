package hub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// sweeper is the hub's one timer. Deadlines live in the store (locked_until, expires_at, feedback
// batch deadlines), so the sweeper only needs to know when to look next: it sleeps until the
// earliest stored deadline, applies everything due in one transaction, and asks the store for the
// next one. Operations that create an earlier deadline arm it. After a restart the first sweep
// finds every stored deadline: timers survive crashes because they are data.
type sweeper struct {
	h     *Hub
	wake  chan struct{}
	mu    sync.Mutex
	next  time.Time // when the sweeper will look next (zero: not scheduled)
	prune time.Time // next prune of settled outcomes
}

const (
	sweepBatch    = 500
	pruneInterval = time.Minute
)

func newSweeper(h *Hub) *sweeper {
	return &sweeper{h: h, wake: make(chan struct{}, 1)}
}

// arm makes the sweeper look at t at the latest.
func (s *sweeper) arm(t time.Time) {
	s.mu.Lock()
	if !s.next.IsZero() && !t.Before(s.next) {
		s.mu.Unlock()
		return
	}
	s.next = t
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// first runs the first sweep, before Open returns the hub: it applies what fell due while the hub
// was down and finds the earliest stored deadline. Run in the loop instead, an operation's arm
// could reach the loop before the first sweep's timer fired and replace it with its own, later
// deadline: a TTL that passed during the restart would then wait for that deadline (a feedback
// lock: a minute) instead of being applied at once.
func (s *sweeper) first() error {
	next, err := s.sweep()
	if err != nil {
		return fmt.Errorf("first timer sweep: %w", err)
	}
	s.mu.Lock()
	s.next = earliest(s.next, next)
	s.mu.Unlock()
	return nil
}

// run sleeps until s.next, sweeps, and repeats; arm wakes it for an earlier deadline. The timer
// always stands on s.next, so an arm that is not earlier than s.next need not wake it.
func (s *sweeper) run() {
	defer s.h.wg.Done()
	timer, fired := s.h.cfg.Clock.NewTimer(time.Hour)
	defer timer.Stop()
	s.standOnNext(timer) // s.next is what the first sweep (before Open returned) found
	for {
		select {
		case <-s.h.done:
			return
		case <-s.wake:
		case <-fired:
			next, err := s.sweep()
			if err != nil {
				if isClosed(err) {
					return
				}
				s.h.log.Error("timer sweep failed; retrying in 1s", "err", err)
				next = s.h.now().Add(time.Second)
			}
			s.mu.Lock()
			s.next = earliest(s.next, next)
			s.mu.Unlock()
		}
		s.standOnNext(timer)
	}
}

// standOnNext sets timer for s.next (stopped when there is none).
func (s *sweeper) standOnNext(timer Timer) {
	s.mu.Lock()
	next := s.next
	s.mu.Unlock()
	timer.Stop()
	if next.IsZero() {
		return
	}
	timer.Reset(max(0, next.Sub(s.h.now())))
	// A timer counts from when it is set, not from when its length was worked out: a clock that
	// moved in between (a test's manual clock jumps; a stalled process) would make it fire that
	// much after the deadline. Past it already: look now.
	if !s.h.now().Before(next) {
		timer.Reset(0)
	}
}

// sweep applies every due deadline and returns the next one.
func (s *sweeper) sweep() (time.Time, error) {
	h := s.h
	s.mu.Lock()
	s.next = time.Time{}
	s.mu.Unlock()
	var next time.Time
	more := false
	err := h.update(context.Background(), func(tx storeTx, e *effects) error {
		next, more = time.Time{}, false
		now := h.now()
		// Locks that expired: back to Enqueued (or dead-lettered by the delivery-count/TTL rules).
		ms, err := tx.lockExpired(now, sweepBatch)
		if err != nil {
			return err
		}
		for i := range ms {
			if _, err := h.release(tx, &ms[i], now, e); err != nil {
				return err
			}
		}
		more = more || len(ms) == sweepBatch
		// Enqueued messages whose TTL passed, connected device or not.
		ms, err = tx.ttlExpired(now, sweepBatch)
		if err != nil {
			return err
		}
		for i := range ms {
			if err := h.finish(tx, &ms[i], iothub.StatusExpired, "", now, e); err != nil {
				return err
			}
		}
		more = more || len(ms) == sweepBatch
		// Feedback batches: expired locks are offered again, expired batches dropped.
		bs, err := tx.lockExpiredBatches(now)
		if err != nil {
			return err
		}
		for _, b := range bs {
			if err := h.unlockBatch(tx, b, e); err != nil {
				return err
			}
		}
		ids, err := tx.expiredBatches(now)
		if err != nil {
			return err
		}
		for _, id := range ids {
			h.log.Warn("feedback batch dropped: its TTL passed before a service completed it", "batch", id)
			if err := tx.deleteBatch(id); err != nil {
				return err
			}
		}
		if err := h.formBatches(tx, now, e); err != nil {
			return err
		}
		if s.prune.IsZero() || !s.prune.After(now) {
			n, err := tx.pruneSettled(now.Add(-h.cfg.SettledRetention))
			if err != nil {
				return err
			}
			if n > 0 {
				h.log.Debug("pruned settled outcomes", "count", n)
			}
			s.prune = now.Add(min(pruneInterval, h.cfg.SettledRetention/2))
		}
		// What is next.
		if next, err = tx.nextMessageDeadline(); err != nil {
			return err
		}
		b, err := tx.nextBatchDeadline()
		if err != nil {
			return err
		}
		next = earliest(earliest(next, b), s.prune)
		if n, oldest, err := tx.unbatched(); err != nil {
			return err
		} else if n > 0 {
			next = earliest(next, oldest.Add(h.cfg.FeedbackInterval))
		}
		if more {
			next = now
		}
		// e.deadline holds deadlines created by this sweep; they are included above.
		e.deadline = time.Time{}
		return nil
	})
	return next, err
}
