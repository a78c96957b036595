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
