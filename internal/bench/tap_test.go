package bench

import (
	"context"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// The tap times a disposition's PUBACK for the message whose delivery carried that lock token,
// and only for complete/reject: the instant lies between the device sending its disposition and
// its Publish returning (the PUBACK passed the tap on its way to the device). A real broker
// (plain mochi, which PUBACKs at once) stands in for the hub: the tap's job is the wire.
func TestDurableTapTimesTheDispositionsPuback(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- ServeRawBroker(ctx, "127.0.0.1:0", func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("raw broker: %v", err)
	}
	tap, err := NewDurableTap(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()

	const dev = "dev-1"
	got := make(chan *iothub.Message, 4)
	device, err := DialLite(tap.Addr(), LiteOptions{ClientID: dev, CleanSession: true, OnMessage: func(topic string, _ []byte) {
		if _, m, err := iothub.ParseDeviceBoundTopic(topic); err == nil {
			got <- m
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()
	if err := device.Subscribe(iothub.DeviceBoundFilter(dev), 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	hub, err := DialLite(addr, LiteOptions{ClientID: "hub", CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()

	deliver := func(mid, lt string) *iothub.Message {
		t.Helper()
		if err := hub.Publish(iothub.DeviceBoundTopic(dev, &iothub.Message{MessageID: mid, LockToken: lt}), nil, 1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery of %s never reached the device", mid)
			return nil
		}
	}
	settle := func(lt string, d iothub.Disposition) (before, after time.Time) {
		t.Helper()
		before = time.Now()
		if err := device.Publish(iothub.DispositionTopic(dev, lt, d), nil, 1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return before, time.Now()
	}

	for _, c := range []struct {
		mid, lt string
		d       iothub.Disposition
	}{{"m-complete", "lt-1", iothub.DispositionComplete}, {"m-reject", "lt-2", iothub.DispositionReject}} {
		if m := deliver(c.mid, c.lt); m.LockToken != c.lt {
			t.Fatalf("delivery carried lock token %q, want %q", m.LockToken, c.lt)
		}
		before, after := settle(c.lt, c.d)
		tt, ok, err := tap.Times(c.mid)
		if err != nil || !ok {
			t.Fatalf("%s: Times = %+v, %v, %v; want the PUBACK's instant", c.mid, tt, ok, err)
		}
		if tt.Disposed.Before(before) || tt.Durable.Before(tt.Disposed) || tt.Durable.After(after) {
			t.Fatalf("%s: disposed %v, durable %v: not within [disposition sent %v, PUBACK received %v] in that order", c.mid, tt.Disposed, tt.Durable, before, after)
		}
		if tt.Delivered.IsZero() || !tt.Delivered.Before(before) {
			t.Fatalf("%s: delivered at %v, want before the disposition was sent (%v)", c.mid, tt.Delivered, before)
		}
	}

	// An abandon does not settle (the message is redelivered); a disposition naming a lock token
	// no delivery carried times nothing.
	deliver("m-abandon", "lt-3")
	settle("lt-3", iothub.DispositionAbandon)
	settle("lt-unknown", iothub.DispositionComplete)
	for _, mid := range []string{"m-abandon", "lt-unknown", "never-sent"} {
		if tt, ok, _ := tap.Times(mid); ok {
			t.Errorf("%s: durable at %v, want not seen", mid, tt.Durable)
		}
	}
}
