package conn

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	min, max := time.Second, time.Minute
	tests := []struct {
		n        int
		r        float64
		want     time.Duration
		scenario string
	}{
		{1, 0, 500 * time.Millisecond, "first retry, no jitter: half of min"},
		{1, 0.999999, time.Second - time.Microsecond, "first retry, full jitter: just under min"},
		{2, 0, time.Second, "doubles"},
		{4, 0.5, 6 * time.Second, "8s window, midpoint"},
		{7, 0, 30 * time.Second, "capped at max (64s > 60s)"},
		{1000, 0.999999, max - 30*time.Microsecond, "huge attempt counts stay capped"},
	}
	for _, tt := range tests {
		got := Backoff(tt.n, min, max, tt.r)
		if got < tt.want-time.Millisecond || got > tt.want+time.Millisecond {
			t.Errorf("%s: Backoff(%d, r=%v) = %v, want ≈%v", tt.scenario, tt.n, tt.r, got, tt.want)
		}
		if got > max || got < 0 {
			t.Errorf("Backoff(%d) = %v outside [0, max]", tt.n, got)
		}
	}
}
