package hub

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// DeviceEvent is iothub.DeviceEvent (the API answer's element).
type DeviceEvent = iothub.DeviceEvent

// Bounds of the event log: it is a live tap for operators (like `az iot hub monitor-events`), not
// a telemetry store, so it keeps the newest events within a fixed memory budget.
const (
	DefaultEventLogEvents = 1000
	DefaultEventLogBytes  = 4 << 20 // bodies, in total
	MaxEventBody          = 16 << 10
)

// EventLog keeps the newest device-to-cloud events in memory, each with a sequence number, for
// readers that follow it (EventsSince). Reading consumes nothing, so any number of operators can
// watch. Nothing is stored on disk: a restart starts an empty log (c2d-hub does not route
// telemetry; the agent's reject reports reach the sender's feedback anyway).
type EventLog struct {
	maxEvents, maxBytes int

	mu     sync.Mutex
	events []DeviceEvent // oldest first
	bytes  int
	seq    int64
	wake   chan struct{} // closed (and replaced) on every Add
	now    func() time.Time
}

// NewEventLog keeps at most maxEvents events and maxBytes of their bodies (0: the defaults).
func NewEventLog(maxEvents, maxBytes int) *EventLog {
	if maxEvents <= 0 {
		maxEvents = DefaultEventLogEvents
	}
	if maxBytes <= 0 {
		maxBytes = DefaultEventLogBytes
	}
	return &EventLog{maxEvents: maxEvents, maxBytes: maxBytes, wake: make(chan struct{}), now: time.Now}
}

// Add records an event a device published with the properties of its topic and its payload.
// It never blocks on readers.
func (l *EventLog) Add(deviceID string, bag iothub.PropertyBag, payload []byte) {
	ev := DeviceEvent{DeviceID: deviceID, BodySize: len(payload), Properties: []iothub.AppProperty{}}
	for _, p := range bag {
		switch p.Name {
		case iothub.PropMessageID:
			ev.MessageID = p.Value
		case iothub.PropCorrelationID:
			ev.CorrelationID = p.Value
		case iothub.PropContentType:
			ev.ContentType = p.Value
		case iothub.PropContentEncoding:
			ev.ContentEncoding = p.Value
		default:
			if !strings.HasPrefix(p.Name, "$.") {
				ev.Properties = append(ev.Properties, iothub.AppProperty{Name: p.Name, Value: p.Value})
			}
		}
	}
	body := payload
	if len(body) > MaxEventBody {
		body, ev.Truncated = body[:MaxEventBody], true
	}
	ev.Body = append([]byte(nil), body...)
	l.mu.Lock()
	l.seq++
	ev.SequenceNumber = l.seq
	ev.EnqueuedTimeUTC = l.now().UTC().Truncate(time.Millisecond)
	l.events = append(l.events, ev)
	l.bytes += len(ev.Body)
	for len(l.events) > l.maxEvents || (l.bytes > l.maxBytes && len(l.events) > 1) {
		l.bytes -= len(l.events[0].Body)
		l.events[0] = DeviceEvent{}
		l.events = l.events[1:]
	}
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// EventsSince returns the events after sequence number after (of deviceID only, if given), at most
// limit, waiting until ctx ends for the first one; and the sequence number to ask after next
// time. after < 0 means "from now on": only events added from this call on. Events older than
// the log's window are gone; the first returned sequence number then jumps.
func (l *EventLog) EventsSince(ctx context.Context, after int64, deviceID string, limit int) ([]DeviceEvent, int64) {
	l.mu.Lock()
	if after < 0 {
		after = l.seq
	}
	l.mu.Unlock()
	for {
		l.mu.Lock()
		var out []DeviceEvent
		for _, ev := range l.events {
			if ev.SequenceNumber <= after || (deviceID != "" && ev.DeviceID != deviceID) {
				continue
			}
			if len(out) == limit {
				break
			}
			out = append(out, ev)
		}
		next := l.seq
		if len(out) == limit {
			next = out[len(out)-1].SequenceNumber
		}
		wake := l.wake
		l.mu.Unlock()
		if len(out) > 0 {
			return out, next
		}
		after = max(after, next)
		select {
		case <-ctx.Done():
			return []DeviceEvent{}, after
		case <-wake:
		}
	}
}
