package hub

import (
	"sync"
	"time"
)

// manualClock is a Clock that moves only when a test moves it. While paused, due timers do not
// fire: that is the window between a deadline passing and the sweep that applies it (a late
// timer, a busy store), which the real clock opens only by chance.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	paused bool
	timers map[*manualTimer]struct{}
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), timers: map[*manualTimer]struct{}{}}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) NewTimer(d time.Duration) (Timer, <-chan time.Time) {
	t := &manualTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t, t.ch
}

// Advance moves the clock by d and fires every timer that is due (unless paused).
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.fireLocked()
	c.mu.Unlock()
}

// Pause stops timers firing; the clock still moves with Advance.
func (c *manualClock) Pause() {
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
}

// Resume fires what came due while paused.
func (c *manualClock) Resume() {
	c.mu.Lock()
	c.paused = false
	c.fireLocked()
	c.mu.Unlock()
}

func (c *manualClock) fireLocked() {
	if c.paused {
		return
	}
	for t := range c.timers {
		if !t.when.After(c.now) {
			delete(c.timers, t)
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

type manualTimer struct {
	c    *manualClock
	ch   chan time.Time
	when time.Time
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, active := t.c.timers[t]
	delete(t.c.timers, t)
	select { // Go 1.23 timers: no stale value after Stop
	case <-t.ch:
	default:
	}
	return active
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, active := t.c.timers[t]
	select {
	case <-t.ch:
	default:
	}
	t.when = t.c.now.Add(d)
	t.c.timers[t] = struct{}{}
	t.c.fireLocked()
	return active
}

// armedAfter reports whether some timer is set for later than now: the sweeper has finished a
// sweep and sleeps until its next deadline.
func (c *manualClock) armedAfter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.timers {
		if t.when.After(c.now) {
			return true
		}
	}
	return false
}
