package amqp

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// Sessions as the peer sees them (AMQP 1.0 §2.5.5, §2.5.6, §2.7.2, §2.7.4, §2.7.6, §2.7.9): the
// two session windows, next-incoming-id, dispositions over a range, handle-max and end. As in
// link_pin_test.go, each property is stated from the specification, the frames go through the
// connection's dispatch and what the hub sends is read back from its write queue.

// begun begins a session on channel 0 with the peer's begin b and moves the harness's link into
// it, attached on handle 7 on both sides; it returns the hub's begin.
func (h *flowHarness) begun(b *frames.PerformBegin) *frames.PerformBegin {
	h.t.Helper()
	h.peer(b)
	got := h.sent()
	hub, ok := got[0].(*frames.PerformBegin)
	if len(got) != 1 || !ok {
		h.t.Fatalf("begin answered with %v, want a begin", got)
	}
	s := h.c.sessions[0]
	h.s, h.l.s = s, s
	s.links[7], s.handles[7] = h.l, true
	h.l.remoteHandle = 7
	return hub
}

// fault hands the hub a frame that must close the connection and returns the close's error.
func (h *flowHarness) fault(fb frames.FrameBody) *encoding.Error {
	h.t.Helper()
	h.c.mu.Lock()
	_, err := h.c.handle(0, fb)
	h.c.mu.Unlock()
	var pe *protoError
	if !errors.As(err, &pe) {
		h.t.Fatalf("the hub's answer to %T: %v, want a close with an AMQP error", fb, err)
	}
	return pe.e
}

// §2.5.6: the peer's flow sets what the hub may send, remote-incoming-window =
// next-incoming-id(flow) + incoming-window(flow) − next-outgoing-id(hub), with the hub's
// initial-outgoing-id (its begin's next-outgoing-id) in place of next-incoming-id when the flow
// has none. Each flow here is a session flow; the link has credit for all ten deliveries.
func TestPeersFlowSetsTheRemoteIncomingWindow(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	initial := h.begun(&frames.PerformBegin{NextOutgoingID: 0, IncomingWindow: 0, OutgoingWindow: 100, HandleMax: 10}).NextOutgoingID
	h.queue(10, 10) // one frame each
	h.peer(&frames.PerformFlow{NextIncomingID: u32(initial), IncomingWindow: 0, Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(10)})
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("the peer's incoming-window 0: the hub sent %v, want nothing", got)
	}
	step := func(what string, f *frames.PerformFlow, want int) {
		t.Helper()
		h.peer(f)
		if got := transfers(t, h.sent()); len(got) != want {
			t.Fatalf("%s: %d transfers, want %d", what, len(got), want)
		}
	}
	step("next-incoming-id initial, incoming-window 3", &frames.PerformFlow{NextIncomingID: u32(initial), IncomingWindow: 3, OutgoingWindow: 100}, 3)
	// The peer has had the three: its window of 2 counts from the fourth.
	step("next-incoming-id initial+3, incoming-window 2", &frames.PerformFlow{NextIncomingID: u32(initial + 3), IncomingWindow: 2, OutgoingWindow: 100}, 2)
	// A flow whose next-incoming-id is behind (sent before the peer saw two of ours) opens only
	// what is left of its window: initial+3 + 4 − (initial+5) = 2.
	step("a stale next-incoming-id initial+3, incoming-window 4", &frames.PerformFlow{NextIncomingID: u32(initial + 3), IncomingWindow: 4, OutgoingWindow: 100}, 2)
	// Without next-incoming-id: initial + 8 − (initial+7) = 1.
	step("no next-incoming-id, incoming-window 8", &frames.PerformFlow{IncomingWindow: 8, OutgoingWindow: 100}, 1)
	h.peer(&frames.PerformFlow{NextIncomingID: u32(initial + 8), IncomingWindow: 0, OutgoingWindow: 100, Echo: true})
	got := h.sent()
	if f, ok := got[0].(*frames.PerformFlow); len(got) != 1 || !ok || f.Handle != nil || f.NextOutgoingID != initial+8 {
		t.Fatalf("session echo after 8 transfers: %v, want one session flow with next-outgoing-id %d", got, initial+8)
	}
}

// §2.5.6: the hub's next-incoming-id starts at the peer's begin's next-outgoing-id and counts one
// per transfer; a peer that sends only while its view of the hub's incoming-window (from the hub's
// begin, then from each of the hub's flows) is open is never stopped: the hub opens its window
// again before the peer has used it up, and says in every flow which transfer it expects next.
func TestHubsIncomingWindowStaysOpenAndNextIncomingIDCountsTransfers(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleReceiver)
	const peerInitial = 1000
	hub := h.begun(&frames.PerformBegin{NextOutgoingID: peerInitial, IncomingWindow: 100, OutgoingWindow: 1 << 20, HandleMax: 10})
	if hub.IncomingWindow == 0 {
		t.Fatal("the hub's begin has incoming-window 0")
	}
	h.l.credit = 1 << 20 // link credit is not what this is about
	window, next := hub.IncomingWindow, uint32(peerInitial)
	flows := 0
	for i := uint32(0); i < 3*hub.IncomingWindow; i++ {
		if window == 0 {
			t.Fatalf("after %d transfers the peer's view of the hub's incoming-window is 0 (%d flows from the hub)", i, flows)
		}
		tag := binary.BigEndian.AppendUint32(nil, i)
		h.peer(&frames.PerformTransfer{Handle: 7, DeliveryID: u32(i), DeliveryTag: tag, Settled: true, Payload: []byte{'x'}})
		next++
		window--
		for _, fb := range h.sent() {
			f, ok := fb.(*frames.PerformFlow)
			if !ok || f.Handle != nil {
				t.Fatalf("after transfer %d the hub sent %v, want only session flows", i, fb)
			}
			if f.NextIncomingID == nil || *f.NextIncomingID != next {
				t.Fatalf("flow after transfer %d: next-incoming-id %v, want %d (the peer's next-outgoing-id)", i, f.NextIncomingID, next)
			}
			window = *f.NextIncomingID + f.IncomingWindow - next
			flows++
		}
	}
	if len(h.n.msgs) != int(3*hub.IncomingWindow) {
		t.Fatalf("%d messages delivered, want %d", len(h.n.msgs), 3*hub.IncomingWindow)
	}
	h.peer(&frames.PerformFlow{NextIncomingID: u32(hub.NextOutgoingID), IncomingWindow: 100, OutgoingWindow: 1 << 20, Echo: true})
	got := h.sent()
	if f, ok := got[0].(*frames.PerformFlow); len(got) != 1 || !ok || f.NextIncomingID == nil || *f.NextIncomingID != next {
		t.Fatalf("session echo: %v, want a flow with next-incoming-id %d", got, next)
	}
}

// §2.7.6: a disposition settles the unsettled deliveries whose ids are in [first, last] (serial
// numbers: the range may wrap) and no other, however the range compares with the number of
// unsettled deliveries; one as wide as 2^32 takes no longer than the deliveries there are.
func TestDispositionRangeSettlesExactlyItsDeliveries(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	s := newSession(newConn(New(Options{}), a), 0, 0, &frames.PerformBegin{})
	n := &recNode{}
	l := &link{s: s, node: n}
	for id, ref := range map[uint32]string{10: "a", 11: "b", 50: "c", 59: "d", 60: "e", 0xfffffff0: "f", 0xffffffff: "g"} {
		s.unsettled[id] = &outDelivery{link: l, ref: ref}
	}
	disp := func(first, last uint32) []string {
		t.Helper()
		n.got = nil
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.disposition(&frames.PerformDisposition{Role: encoding.RoleReceiver, First: first, Last: &last, Settled: true, State: &encoding.StateAccepted{}})
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("disposition [%#x, %#x] with %d unsettled still running after 2 s", first, last, len(s.unsettled))
		}
		slices.Sort(n.got)
		return n.got
	}
	// 49 ids, 7 unsettled: three of them in the range, its last one included.
	if got := disp(11, 59); !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Fatalf("[11, 59] settled %v, want b c d", got)
	}
	// Wrapping, 27 ids, 4 unsettled: g, f and a (the last) are in it, e is not.
	if got := disp(0xfffffff0, 10); !slices.Equal(got, []string{"a", "f", "g"}) {
		t.Fatalf("[0xfffffff0, 10] settled %v, want a f g", got)
	}
	// Every id but 0 (2^32 − 1 of them), one unsettled.
	s.unsettled[0] = &outDelivery{link: l, ref: "h"}
	s.unsettled[5] = &outDelivery{link: l, ref: "i"}
	if got := disp(1, 0xffffffff); !slices.Equal(got, []string{"e", "i"}) {
		t.Fatalf("[1, 0xffffffff] settled %v, want e i", got)
	}
	if got := disp(1, 0); !slices.Equal(got, []string{"h"}) {
		t.Fatalf("[1, 0] (all 2^32 ids) settled %v, want h", got)
	}
	if len(s.unsettled) != 0 {
		t.Fatalf("unsettled left: %v", s.unsettled)
	}
}

// §2.7.2 handle-max: the hub's handles stay within the handle-max of the peer's begin. With the
// peer's handle-max at 1 a third link has no handle the hub may use, and an attach cannot be
// answered without one (§2.6.3), so the session ends with resource-limit-exceeded (the peer
// asked for more links than its own handle-max admits). The peer's end then completes the end
// (§2.7.9: no second end from the hub) and frees the channel for a new session.
func TestAttachBeyondThePeersHandleMaxEndsTheSession(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(1)
	h.peer(cbsSource(0), cbsTarget(1, 0))
	h.sent()
	h.peer(cbsSource(2))
	got := h.sent()
	for _, fb := range got {
		if a, ok := fb.(*frames.PerformAttach); ok {
			t.Fatalf("a third link with the peer's handle-max 1 was attached on the hub's handle %d", a.Handle)
		}
	}
	if e, ok := got[0].(*frames.PerformEnd); len(got) != 1 || !ok || e.Error == nil || e.Error.Condition != condResourceLimit {
		t.Fatalf("a third link with the peer's handle-max 1: the hub sent %v, want an end with %s", got, condResourceLimit)
	}
	h.peer(&frames.PerformEnd{})
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("the peer's end after the hub's: the hub sent %v, want nothing", got)
	}
	// With handle-max 0 a session has one link.
	h.begin(0)
	h.peer(cbsSource(0))
	if a, ok := h.sent()[0].(*frames.PerformAttach); !ok || a.Handle != 0 {
		t.Fatalf("the first link with the peer's handle-max 0 got %v, want the hub's handle 0", a)
	}
	h.peer(cbsTarget(1, 0))
	if e, ok := h.sent()[0].(*frames.PerformEnd); !ok || e.Error == nil || e.Error.Condition != condResourceLimit {
		t.Fatalf("a second link with the peer's handle-max 0 was not refused with %s", condResourceLimit)
	}
}

// §2.7.2 handle-max: without the field the peer's handle-max is 2^32 − 1, so it limits nothing.
func TestBeginWithoutHandleMaxLimitsNoHandles(t *testing.T) {
	body := []byte{0x00, 0x53, 0x11, 0xc0, 0x08, 0x04, 0x40, 0x52, 0x00, 0x52, 0x64, 0x52, 0x64}
	fb, err := decodeBody(body) // begin: remote-channel null, next-outgoing-id 0, windows 100; 4 fields
	if err != nil {
		t.Fatalf("decoding a begin without handle-max: %v", err)
	}
	h := newFlowHarness(t, encoding.RoleSender)
	h.peer(fb)
	h.sent()
	for i := uint32(0); i < 3; i++ {
		h.peer(cbsSource(i))
		if a, ok := h.sent()[0].(*frames.PerformAttach); !ok || a.Handle != i {
			t.Fatalf("link %d after a begin without handle-max got %v, want an attach on the hub's handle %d", i, a, i)
		}
	}
}
