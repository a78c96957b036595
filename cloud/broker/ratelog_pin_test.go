package broker

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/logtest"
)

// pinClock is a manual clock for the log limits.
type pinClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *pinClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *pinClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// After the burst, one line passes per logEvery: none before a whole second has passed, exactly
// one after it, and after 3 s three.
func TestLogLimitRefillsOneLinePerSecond(t *testing.T) {
	c := &pinClock{now: time.Unix(1000, 0)}
	l := newLogLimit(c.Now)
	for range logBurst {
		if ok, _ := l.take(); !ok {
			t.Fatal("a line of the first burst was suppressed")
		}
	}
	passed := func() int {
		n := 0
		for range logBurst + 10 {
			if ok, _ := l.take(); ok {
				n++
			}
		}
		return n
	}
	if n := passed(); n != 0 {
		t.Fatalf("%d lines passed right after the burst, want 0", n)
	}
	c.add(logEvery / 2)
	if n := passed(); n != 0 {
		t.Fatalf("%d lines passed half a second after the burst, want 0", n)
	}
	c.add(logEvery / 2)
	if n := passed(); n != 1 {
		t.Fatalf("%d lines passed one second after the burst, want 1", n)
	}
	c.add(3 * logEvery)
	if n := passed(); n != 3 {
		t.Fatalf("%d lines passed 3 s later, want 3", n)
	}
}

// full: a limit is forgettable only when nothing is suppressed and its tokens are back at a whole
// burst, counting the refill since its last line.
func TestLogLimitFullOnlyWhenBackAtAWholeBurst(t *testing.T) {
	c := &pinClock{now: time.Unix(1000, 0)}
	fresh := newLogLimit(c.Now)
	if !fresh.full() {
		t.Fatal("a new limit is not full")
	}
	used := newLogLimit(c.Now)
	for range 10 {
		used.take()
	}
	if used.full() {
		t.Fatal("a limit 10 lines short of its burst counts as full")
	}
	c.add(5 * logEvery)
	if used.full() {
		t.Fatal("a limit 5 lines short of its burst counts as full")
	}
	c.add(5 * logEvery)
	if !used.full() {
		t.Fatal("a limit refilled to its burst does not count as full")
	}
	flood := newLogLimit(c.Now)
	for range logBurst + 3 {
		flood.take()
	}
	c.add(time.Hour)
	if flood.full() {
		t.Fatal("a limit that suppressed lines counts as full before it has said so")
	}
}

// The bound holds after every get, not only at the end: limits back at a full burst are forgotten
// at maxLogLimits; when none is, exactly one other limit goes.
func TestLogLimitsNeverExceedTheirBound(t *testing.T) {
	c := &pinClock{now: time.Unix(1000, 0)}
	ls := newLogLimits(c.Now)
	key := func(i int) string { return "d" + time.Duration(i).String() + "/" }
	for i := range maxLogLimits {
		ls.get(key(i))
	}
	if n := len(ls.m); n != maxLogLimits {
		t.Fatalf("%d limits after %d devices, want all kept", n, maxLogLimits)
	}
	ls.get("one-more/")
	if n := len(ls.m); n != 1 {
		t.Fatalf("%d limits kept after the bound was reached with only full ones, want just the new one", n)
	}
	// Every device floods: nothing is full.
	ls = newLogLimits(c.Now)
	for i := range maxLogLimits {
		l := ls.get(key(i))
		for range logBurst + 1 {
			l.take()
		}
	}
	for i := range 3 {
		ls.get("new/" + key(i))
		if n := len(ls.m); n != maxLogLimits {
			t.Fatalf("%d limits kept with every device flooding, want exactly the bound %d", n, maxLogLimits)
		}
	}
}

// A line that follows no suppressed ones carries no suppressed_lines attribute; one that follows
// suppressed lines says how many.
func TestSuppressedLinesAttributeOnlyAfterSuppression(t *testing.T) {
	c := &pinClock{now: time.Unix(1000, 0)}
	rec := &logtest.Recorder{}
	log := slog.New(limitedHandler{rec, newLogLimit(c.Now)})
	log.Info("first")
	for range logBurst + 4 {
		log.Info("flood")
	}
	c.add(logEvery)
	log.Info("after")
	rs := rec.All()
	if len(rs) != logBurst+1 {
		t.Fatalf("%d lines logged, want %d", len(rs), logBurst+1)
	}
	if v, ok := rs[0]["suppressed_lines"]; ok {
		t.Fatalf("first line carries suppressed_lines=%v", v)
	}
	if v := rs[logBurst]["suppressed_lines"]; v != int64(5) {
		t.Fatalf("line after the flood has suppressed_lines=%v, want 5", v)
	}
}
