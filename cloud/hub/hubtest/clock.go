// Package hubtest holds helpers for tests of the rooms built on cloud/hub (api, amqp, broker).
package hubtest

import (
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
)

// StillClock is a hub.Clock whose time stands at Now and whose timers never fire: in a hub
// running on it no deadline passes (lock expiry, TTL, the feedback batch window), so whatever
// happens was caused by the test, not by a timer.
type StillClock struct{ At time.Time }

func (c StillClock) Now() time.Time { return c.At }

func (StillClock) NewTimer(time.Duration) (hub.Timer, <-chan time.Time) {
	return stillTimer{}, make(chan time.Time)
}

type stillTimer struct{}

func (stillTimer) Stop() bool               { return true }
func (stillTimer) Reset(time.Duration) bool { return true }
