package hub

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func TestEventLogBoundsAndFollow(t *testing.T) {
	l := NewEventLog(3, 40)
	bag := iothub.PropertyBag{{Name: "$.ct", Value: "application/json"}, {Name: "$.mid", Value: "e1"}, {Name: "c2d-report", Value: "reject"}, {Name: "$.to", Value: "/x"}}
	l.Add("d1", bag, []byte(`{"a":1}`))
	evs, next := l.EventsSince(context.Background(), 0, "", 10)
	if len(evs) != 1 || next != 1 || evs[0].ContentType != "application/json" || evs[0].MessageID != "e1" ||
		len(evs[0].Properties) != 1 || evs[0].Properties[0] != (iothub.AppProperty{Name: "c2d-report", Value: "reject"}) || string(evs[0].Body) != `{"a":1}` {
		t.Fatalf("first event: %+v next %d", evs, next)
	}
	// At most 3 events and 40 body bytes are kept; the oldest go first.
	for i := 0; i < 4; i++ {
		l.Add("d2", nil, []byte(strings.Repeat("x", 15)))
	}
	evs, _ = l.EventsSince(context.Background(), 0, "", 10)
	if len(evs) != 2 || evs[0].SequenceNumber != 4 || evs[1].SequenceNumber != 5 {
		t.Fatalf("window: %d events from %d", len(evs), evs[0].SequenceNumber)
	}
	// A big body is cut and says so.
	l.Add("d3", nil, make([]byte, MaxEventBody+1))
	evs, _ = l.EventsSince(context.Background(), 5, "d3", 10)
	if len(evs) != 1 || !evs[0].Truncated || len(evs[0].Body) != MaxEventBody || evs[0].BodySize != MaxEventBody+1 {
		t.Fatalf("big body: %+v", evs)
	}
	// A follower waits for the next event of the device asked for, not others'.
	got := make(chan []iothub.DeviceEvent, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { evs, _ := l.EventsSince(ctx, 6, "d9", 10); got <- evs }()
	l.Add("d8", nil, []byte("other"))
	l.Add("d9", nil, []byte("mine"))
	if evs := <-got; len(evs) != 1 || string(evs[0].Body) != "mine" {
		t.Fatalf("follow: %+v", evs)
	}
	// A reader whose context ends gets nothing, and where to go on from.
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if evs, next := l.EventsSince(short, -1, "", 10); len(evs) != 0 || next != 8 {
		t.Fatalf("timeout: %+v next %d", evs, next)
	}
}

// The event log's limits are exact: a log of n events keeps n, a body of MaxEventBody bytes is
// whole, one byte more is cut; limits left at 0 are the defaults, not "nothing".
func TestEventLogLimitsAreExact(t *testing.T) {
	now := func() context.Context { // what the log holds now, without waiting for more
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}
	seqs := func(l *EventLog) []int64 {
		evs, _ := l.EventsSince(now(), 0, "", 1<<20)
		var s []int64
		for _, ev := range evs {
			s = append(s, ev.SequenceNumber)
		}
		return s
	}
	l := NewEventLog(3, 0)
	for range 5 {
		l.Add("d", nil, []byte("x"))
	}
	if s := seqs(l); len(s) != 3 || s[0] != 3 {
		t.Fatalf("a log of 3 events after 5 keeps %v; want 3, 4, 5", s)
	}
	// A reader asking for 2 gets the oldest 2 and asks after the second next time.
	if evs, next := l.EventsSince(now(), 0, "", 2); len(evs) != 2 || evs[0].SequenceNumber != 3 || evs[1].SequenceNumber != 4 || next != 4 {
		t.Fatalf("2 of 3 events: %d events, next %d; want 3 and 4, next 4", len(evs), next)
	}

	b := NewEventLog(10, 30)
	b.Add("d", nil, make([]byte, 15))
	b.Add("d", nil, make([]byte, 15))
	if s := seqs(b); len(s) != 2 {
		t.Fatalf("a log of 30 body bytes holding exactly 30 keeps %v; want both events", s)
	}
	b.Add("d", nil, make([]byte, 1))
	if s := seqs(b); len(s) != 2 || s[0] != 2 {
		t.Fatalf("one byte over 30 keeps %v; want 2, 3", s)
	}

	d := NewEventLog(0, 0)
	for range DefaultEventLogEvents + 1 {
		d.Add("d", nil, []byte("x"))
	}
	if s := seqs(d); len(s) != DefaultEventLogEvents || s[0] != 2 {
		t.Fatalf("a log with the default limits keeps %d events from %v; want %d from 2", len(s), s[:min(1, len(s))], DefaultEventLogEvents)
	}

	d.Add("edge", nil, make([]byte, MaxEventBody))
	d.Add("edge", nil, make([]byte, MaxEventBody+1))
	evs, _ := d.EventsSince(now(), 0, "edge", 10)
	if len(evs) != 2 || evs[0].Truncated || len(evs[0].Body) != MaxEventBody || !evs[1].Truncated || len(evs[1].Body) != MaxEventBody {
		t.Fatalf("bodies of %d and %d bytes: %d events; want the first whole and the second cut", MaxEventBody, MaxEventBody+1, len(evs))
	}
}

// A follower with nothing new waits for the whole of its context: it returns no earlier than the
// context's end, with nothing and the sequence number to go on from. (An answer at once with
// nothing would make a follower poll in a tight loop.) Events of other devices do not end it.
func TestEventLogFollowerWithNothingNewWaitsForItsContext(t *testing.T) {
	l := NewEventLog(10, 1000)
	l.Add("d1", nil, []byte("old"))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	go l.Add("d2", nil, []byte("someone else's"))
	evs, next := l.EventsSince(ctx, 1, "d1", 10)
	if ctx.Err() == nil {
		t.Fatalf("EventsSince returned %+v (next %d) before its context ended", evs, next)
	}
	if len(evs) != 0 || next < 1 {
		t.Fatalf("EventsSince = %+v, next %d; want nothing, next ≥ 1", evs, next)
	}
}
