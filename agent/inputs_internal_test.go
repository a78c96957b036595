package agent

import (
	"testing"
	"time"
)

// A chattering input logs its first changeLogBurst changes per window; the first change of the
// next window is logged with the count of those that were not. Inputs are counted apart.
func TestChangeLogBounded(t *testing.T) {
	var c changeLog
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	logged := 0
	for i := 0; i < 25; i++ {
		ok, sup := c.note("door", t0.Add(time.Duration(i)*time.Millisecond))
		if sup != 0 {
			t.Fatalf("change %d: suppressed %d reported inside the window", i, sup)
		}
		if ok {
			logged++
		}
	}
	if logged != changeLogBurst {
		t.Fatalf("logged %d of 25 changes in one window; want %d", logged, changeLogBurst)
	}
	if ok, _ := c.note("pir", t0.Add(30*time.Millisecond)); !ok {
		t.Fatal("another input's change was not logged")
	}
	ok, sup := c.note("door", t0.Add(changeLogWindow))
	if !ok || sup != 25-changeLogBurst {
		t.Fatalf("next window: log %v, suppressed %d; want true, %d", ok, sup, 25-changeLogBurst)
	}
	if ok, sup := c.note("door", t0.Add(changeLogWindow+time.Millisecond)); !ok || sup != 0 {
		t.Fatalf("second change of the new window: %v %d", ok, sup)
	}
}
