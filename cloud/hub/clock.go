package hub

import "time"

// Clock is where the hub's time and its one timer come from (tailscale's tstime pattern): the
// system clock in production, a manual one in tests, which then cross lock, TTL and feedback
// deadlines exactly — including the window between a deadline and the sweep that applies it —
// instead of waiting for them.
type Clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer: the channel receives once d has passed on this clock.
	NewTimer(d time.Duration) (Timer, <-chan time.Time)
}

// Timer is the part of *time.Timer the hub uses (Go 1.23 semantics: after Stop or Reset no stale
// value is received).
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

func (SystemClock) NewTimer(d time.Duration) (Timer, <-chan time.Time) {
	t := time.NewTimer(d)
	return t, t.C
}
