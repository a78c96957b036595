package amqp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// Links as the peer sees them from attach on (AMQP 1.0 §2.6, §2.7): handles, the receiver's
// delivery-count, max-message-size, settlement and splitting. Like link_flow_test.go,
// each property is stated from the specification; the frames go through the connection's
// dispatch (conn.handle) as the reader hands them over, and what the hub sends is read back from
// its write queue.

// peer hands the hub frames on channel 0 as its reader would.
func (h *flowHarness) peer(fbs ...frames.FrameBody) {
	h.t.Helper()
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	for _, fb := range fbs {
		if done, err := h.c.handle(0, fb); err != nil || done {
			h.t.Fatalf("the hub's answer to %T: done %v, %v", fb, done, err)
		}
	}
}

// begin starts a session on channel 0 with the peer's handle-max and returns the hub's begin.
func (h *flowHarness) begin(handleMax uint32) *frames.PerformBegin {
	h.t.Helper()
	h.peer(&frames.PerformBegin{NextOutgoingID: 0, IncomingWindow: 10000, OutgoingWindow: 10000, HandleMax: handleMax})
	got := h.sent()
	b, ok := got[0].(*frames.PerformBegin)
	if len(got) != 1 || !ok {
		h.t.Fatalf("begin answered with %v, want a begin", got)
	}
	return b
}

// cbsSource attaches a link on which the hub sends ($cbs as source: no token needed).
func cbsSource(handle uint32) *frames.PerformAttach {
	return &frames.PerformAttach{Name: "replies", Handle: handle, Role: encoding.RoleReceiver,
		Source: &frames.Source{Address: "$cbs"}, Target: &frames.Target{Address: "cbs-client"}}
}

// cbsTarget attaches a link on which the hub receives ($cbs as target).
func cbsTarget(handle, initialDeliveryCount uint32) *frames.PerformAttach {
	return &frames.PerformAttach{Name: "requests", Handle: handle, Role: encoding.RoleSender,
		Source: &frames.Source{Address: "cbs-client"}, Target: &frames.Target{Address: "$cbs"},
		InitialDeliveryCount: initialDeliveryCount}
}

// handle-max is the highest handle the peer may use (§2.7.2): an attach on the hub's handle-max
// itself is a link; one past it is a handle outside the range the hub supports, and "a peer that
// receives a handle outside the supported range MUST close the connection with the framing-error
// error-code".
func TestAttachOnHandleMaxIsAcceptedAndBeyondItClosesTheConnection(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	hm := h.begin(4).HandleMax
	h.peer(cbsSource(hm))
	got := h.sent()
	if a, ok := got[0].(*frames.PerformAttach); len(got) != 1 || !ok || a.Source == nil {
		t.Fatalf("attach on handle-max %d answered with %v, want an attach with the node", hm, got)
	}
	if e := h.fault(cbsSource(hm + 1)); e.Condition != condFraming {
		t.Fatalf("attach on handle-max+1 closed the connection with %v, want %s", e, condFraming)
	}
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("attach on handle-max+1: the hub sent %v before the close, want nothing", got)
	}
}

// The hub picks its own handle for each link (§2.6.2) within the handle-max the peer announced
// (§2.7.1): with the peer's handle-max at 1, two links can only be handles 0 and 1; a handle the
// peer's detach freed is free for the next link.
func TestHubsHandlesStayWithinThePeersHandleMax(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(1)
	h.peer(cbsSource(0), cbsTarget(1, 0))
	handles := map[uint32]bool{}
	for _, fb := range h.sent() {
		if a, ok := fb.(*frames.PerformAttach); ok {
			handles[a.Handle] = true
		}
	}
	if len(handles) != 2 || !handles[0] || !handles[1] {
		t.Fatalf("two links with the peer's handle-max 1 got the hub's handles %v, want 0 and 1", handles)
	}
	h.peer(&frames.PerformDetach{Handle: 0, Closed: true})
	d, ok := h.sent()[0].(*frames.PerformDetach)
	if !ok {
		t.Fatal("the peer's detach was not answered")
	}
	h.peer(cbsSource(0))
	if a, ok := h.sent()[0].(*frames.PerformAttach); !ok || a.Handle != d.Handle {
		t.Fatalf("a link attached after the detach of the hub's handle %d got %v, want that handle again (the other is taken, handle-max 1)", d.Handle, a)
	}
}

// Where the hub receives, its delivery-count starts at the sender's initial-delivery-count (§2.7.3)
// and grows by one per delivery received (§2.6.7), so the sender's credit, its count subtracted
// from ours plus our link-credit, is what we granted. Here the sender starts at 1000 and sends 3.
func TestReceivingLinksDeliveryCountStartsAtTheSendersAndCountsDeliveries(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(10)
	h.peer(cbsTarget(0, 1000))
	got := h.sent()
	f, ok := got[len(got)-1].(*frames.PerformFlow)
	if !ok || f.DeliveryCount == nil || *f.DeliveryCount != 1000 || f.LinkCredit == nil {
		t.Fatalf("flow after attaching with initial-delivery-count 1000: %v, want delivery-count 1000", got[len(got)-1])
	}
	granted := *f.LinkCredit
	for i := uint32(0); i < 3; i++ { // not a put-token request: each is rejected, none is answered
		h.peer(&frames.PerformTransfer{Handle: 0, DeliveryID: u32(i), DeliveryTag: []byte{byte(i)}, Payload: []byte("x")})
	}
	h.sent()
	h.peer(&frames.PerformFlow{NextIncomingID: u32(0), IncomingWindow: 100, Handle: u32(0), DeliveryCount: u32(1003), LinkCredit: u32(0), Echo: true})
	got = h.sent()
	f, ok = got[len(got)-1].(*frames.PerformFlow)
	if !ok || f.DeliveryCount == nil || *f.DeliveryCount != 1003 || *f.LinkCredit != granted-3 {
		t.Fatalf("echo after 3 deliveries: %v, want delivery-count 1003 and credit %d", got[len(got)-1], granted-3)
	}
}

// max-message-size in the hub's attach is the largest message it takes (§2.7.3): one of exactly
// that size, in several transfers, is a delivery; one byte more is refused with
// message-size-exceeded (a detach), however it is split.
func TestMessageOfMaxMessageSizeIsTakenAndOneByteMoreDetaches(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(10)
	h.peer(cbsTarget(0, 0))
	limit := int(h.sent()[0].(*frames.PerformAttach).MaxMessageSize)
	send := func(id uint32, sizes ...int) {
		for i, n := range sizes {
			tr := &frames.PerformTransfer{Handle: 0, Payload: bytes.Repeat([]byte{'x'}, n), More: i < len(sizes)-1}
			if i == 0 {
				tr.DeliveryID, tr.DeliveryTag = &id, []byte{byte(id)}
			}
			h.peer(tr)
		}
	}
	send(0, limit/4, limit/4, limit-limit/2)
	if got := h.sent(); len(got) != 1 {
		t.Fatalf("a message of max-message-size %d: %v, want its disposition", limit, got)
	} else if _, ok := got[0].(*frames.PerformDisposition); !ok {
		t.Fatalf("a message of max-message-size %d: %v, want a disposition, not a detach", limit, got)
	}
	send(1, limit/2, limit-limit/2+1)
	if c := detachCondition(t, h.sent()); !strings.HasPrefix(c, "amqp:link:message-size-exceeded") {
		t.Fatalf("a message of max-message-size+1 in two transfers: %s", c)
	}
}

// A delivery the peer sent settled (at most once, §2.7.5) gets no disposition from the hub; an
// unsettled one gets exactly one.
func TestPreSettledDeliveryGetsNoDisposition(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(10)
	h.peer(cbsTarget(0, 0))
	h.sent()
	h.peer(&frames.PerformTransfer{Handle: 0, DeliveryID: u32(0), DeliveryTag: []byte{0}, Payload: []byte("x"), Settled: true})
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("a pre-settled delivery (rejected by $cbs): %v, want nothing sent", got)
	}
	h.peer(&frames.PerformTransfer{Handle: 0, DeliveryID: u32(1), DeliveryTag: []byte{1}, Payload: []byte("x")})
	got := h.sent()
	if d, ok := got[0].(*frames.PerformDisposition); len(got) != 1 || !ok || d.First != 1 || !d.Settled {
		t.Fatalf("an unsettled delivery (rejected by $cbs): %v, want one settled disposition for delivery 1", got)
	}
}

type keepNode struct {
	nodeBase
	in   []*inDelivery
	done []*outDelivery // the peer's settlements of what the link sent
}

func (n *keepNode) message(_ *link, d *inDelivery) { n.in = append(n.in, d) }
func (n *keepNode) settled(_ *link, d *outDelivery, _ encoding.DeliveryState) {
	n.done = append(n.done, d)
}

// A node settles when it is done (a device-bound send once it is durable): if the hub closed the
// link in the meantime, the settlement sends nothing (the link and its unsettled state are gone).
func TestSettlementAfterTheHubDetachedSendsNothing(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleReceiver)
	n := &keepNode{}
	h.l.node = n
	h.l.giveCredit(10)
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(0), DeliveryTag: []byte{0}, Payload: []byte("m")})
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(1), DeliveryTag: []byte{1}, Payload: []byte("m")})
	h.sent()
	h.l.settleIn(n.in[0], &encoding.StateAccepted{})
	if got := h.sent(); len(got) != 1 {
		t.Fatalf("settling a delivery on the attached link sent %v, want its disposition", got)
	}
	h.l.detach(nil)
	h.sent()
	h.l.settleIn(n.in[1], &encoding.StateAccepted{})
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("settling after the hub's detach sent %v, want nothing", got)
	}
}

// Delivery-ids are the session's (§2.6.12): when one link ends, the deliveries it sent are
// forgotten and the other links' stay unsettled until the peer settles them; a peer that settles
// second (§2.6.12, rcv-settle-mode second) still gets the hub's confirmation for them.
func TestLinkEndForgetsOnlyItsOwnUnsettledDeliveries(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	n2 := &keepNode{}
	l2 := &link{s: h.s, node: n2, role: encoding.RoleSender, localHandle: 8}
	h.queue(1, 10)
	l2.queue = []*outDelivery{{link: l2, tag: []byte{9}, payload: []byte("other")}}
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(1)})
	l2.flow(&frames.PerformFlow{Handle: u32(8), DeliveryCount: u32(0), LinkCredit: u32(1)})
	got := transfers(t, h.sent())
	if len(got) != 2 || *got[0].DeliveryID != 0 || *got[1].DeliveryID != 1 {
		t.Fatalf("one delivery on each link: %v", got)
	}
	h.l.detach(nil)
	h.sent()
	for id := uint32(0); id < 2; id++ {
		h.s.disposition(&frames.PerformDisposition{Role: encoding.RoleReceiver, First: id, State: &encoding.StateAccepted{}})
	}
	got2 := h.sent()
	if d, ok := got2[0].(*frames.PerformDisposition); len(got2) != 1 || !ok || d.First != 1 || !d.Settled || d.Role != encoding.RoleSender {
		t.Fatalf("the peer accepted (settling second) both deliveries after the first link ended: %v, want the hub's settled disposition for delivery 1 only", got2)
	}
	if len(n2.done) != 1 || !bytes.Equal(n2.done[0].payload, []byte("other")) {
		t.Fatalf("the other link's node was told of %d settlements, want its one delivery", len(n2.done))
	}
}

// A delivery goes out in transfers that together are its payload, delivery-id on the first, more
// on all but the last (§2.7.5); the next transfer on the link starts the next delivery. Checked for
// every payload size from 0 to past two of the peer's max-frame-size, whatever the hub's overhead
// per frame.
func TestSplitDeliveryEndsWithItsLastByteAtEverySize(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.c.peerMax = 512
	h.s.remoteIncomingWindow = 1 << 20
	const sizes = 1200
	for n := 0; n < sizes; n++ {
		p := bytes.Repeat([]byte{byte(n)}, n)
		h.l.queue = append(h.l.queue, &outDelivery{link: h.l, tag: []byte{byte(n), byte(n >> 8)}, payload: p, settled: true})
	}
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(sizes)})
	got := transfers(t, h.sent())
	n := 0
	for i := 0; i < len(got); n++ {
		if got[i].DeliveryID == nil || *got[i].DeliveryID != uint32(n) {
			t.Fatalf("transfer %d starts delivery %d (payload %d bytes) with delivery-id %v", i, n, n, got[i].DeliveryID)
		}
		var p []byte
		for ; ; i++ {
			if i > len(got)-1 {
				t.Fatalf("delivery %d: the transfers end with more set", n)
			}
			p = append(p, got[i].Payload...)
			if !got[i].More {
				i++
				break
			}
		}
		if !bytes.Equal(p, bytes.Repeat([]byte{byte(n)}, n)) {
			t.Fatalf("delivery %d: %d bytes reassembled, want its %d", n, len(p), n)
		}
	}
	if n != sizes {
		t.Fatalf("%d deliveries in the transfers, want %d", n, sizes)
	}
}

// Some clients (uamqp) address a node with the scheme and host before its path:
// amqps://{host}/messages/devicebound is /messages/devicebound; with no path it is the root.
func TestNodeAddressWithSchemeAndHostIsItsPath(t *testing.T) {
	for in, want := range map[string]string{
		"amqps://h.azure-devices.net/messages/devicebound":          "/messages/devicebound",
		"amqp://h.azure-devices.net/devices/d/messages/devicebound": "/devices/d/messages/devicebound",
		"amqps:///messages/serviceBound/feedback":                   "/messages/serviceBound/feedback",
		"amqps://h.azure-devices.net":                               "/",
		"/messages/devicebound":                                     "/messages/devicebound",
		"$cbs":                                                      "$cbs",
	} {
		if got := normalizeAddress(in); got != want {
			t.Errorf("address %q is node %q, want %q", in, got, want)
		}
	}
}
