package broker

import (
	"sync"
	"testing"
	"time"
)

// A device that reconnects in a loop must not get a new burst with every session: its lines
// share one limit across sessions, while another device keeps its own.
func TestLogLimitIsPerDeviceAcrossSessions(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ls := newLogLimits(clock)
	logged := 0
	for range 20 { // 20 sessions of the same device, 10 lines each
		l := ls.get("flood/")
		for range 10 {
			if ok, _ := l.take(); ok {
				logged++
			}
		}
	}
	if logged != logBurst {
		t.Fatalf("%d lines logged over 20 sessions, want one burst of %d", logged, logBurst)
	}
	if ok, _ := ls.get("quiet/").take(); !ok {
		t.Fatal("another device's first line was suppressed")
	}
}

// The per-device limits are bounded; limits back at a full burst go first, and a flooding
// device's limit is kept while there is room.
func TestLogLimitsBounded(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ls := newLogLimits(clock)
	flood := ls.get("flood/")
	for range logBurst + 5 {
		flood.take()
	}
	for i := range maxLogLimits + 100 {
		ls.get(string(rune('a'+i%26)) + "/" + time.Duration(i).String())
	}
	if n := len(ls.m); n > maxLogLimits {
		t.Fatalf("%d limits kept, bound %d", n, maxLogLimits)
	}
	if ls.get("flood/") != flood {
		t.Fatal("the flooding device's limit was forgotten while full ones could go")
	}
}
