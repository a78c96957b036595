package action

import (
	"math"
	"time"
)

// Durations from messages reach the limits of time.Duration (an int64 of nanoseconds, about
// 292 years): "interval=2562047h" is valid Go syntax, and on + off of two such values, or a count
// times a cycle, wraps negative in plain arithmetic — and a negative busy time passes every
// "exceeds max_duration" check. Every sum and product of durations and counts in this package goes
// through these helpers, which clamp at the largest representable duration instead of wrapping.

// maxDuration is the saturation bound: larger than any output's max_duration.
const maxDuration = time.Duration(math.MaxInt64)

// addDur returns a + b for non-negative a and b, saturating at maxDuration. A negative operand
// (which the parsers never produce) saturates too, so it can never slip under a limit.
func addDur(a, b time.Duration) time.Duration {
	if a < 0 || b < 0 || a > maxDuration-b {
		return maxDuration
	}
	return a + b
}

// mulDur returns n × d for non-negative n and d, saturating at maxDuration.
func mulDur(n int, d time.Duration) time.Duration {
	if n < 0 || d < 0 {
		return maxDuration
	}
	if n == 0 || d == 0 {
		return 0
	}
	if int64(d) > math.MaxInt64/int64(n) {
		return maxDuration
	}
	return time.Duration(n) * d
}
