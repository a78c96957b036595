package agent

import (
	"testing"

	"github.com/c2d-project/c2d/agent/conn"
)

// Issue #17: a hostile broker grew the agent's inbound queue to 515 MB. It is bounded: past
// maxIntake deliveries are handed back unacknowledged (the broker keeps them), in order kept.
func TestIntakeQueueIsBounded(t *testing.T) {
	q := newQueue(maxIntake)
	var dropped, full int
	q.drop = func(*conn.Delivery) { dropped++ }
	q.onFull = func(*conn.Delivery) { full++ }
	ds := make([]*conn.Delivery, maxIntake+44)
	for i := range ds {
		ds[i] = &conn.Delivery{Topic: string(rune('a' + i%26))}
		q.push(ds[i])
	}
	if dropped != 44 || full != 44 {
		t.Fatalf("dropped %d, full %d; want 44 each", dropped, full)
	}
	for i := 0; i < maxIntake; i++ {
		d, ok := q.pop()
		if !ok || d != ds[i] {
			t.Fatalf("pop %d: %v %v, want the %dth pushed", i, d, ok, i)
		}
	}
	q.push(ds[0]) // room again
	if dropped != 44 {
		t.Fatalf("a push into a drained queue was dropped")
	}
	q.close()
	if dropped != 45 || full != 44 {
		t.Fatalf("close: dropped %d, full %d; want the queued one dropped, not counted as full", dropped, full)
	}
}
