package amqp

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// Link flow control (AMQP 1.0 §2.6.7) stated from the specification, not from link.go: what the
// hub sends where it is the sender, and what it refuses where it is the receiver. The Azure SDK
// tests in cloud/server exercise the same code, but only along the paths those SDKs take.

// flowHarness is one session with one link on a connection whose writer is not running: every
// frame the hub sends stays in the connection's queue, where sent decodes it.
type flowHarness struct {
	t *testing.T
	c *conn
	s *session
	l *link
	n *flowNode
}

type flowNode struct {
	nodeBase
	msgs    [][]byte
	credits int
	gone    int
}

func (n *flowNode) message(_ *link, d *inDelivery) { n.msgs = append(n.msgs, d.payload) }
func (n *flowNode) credit(*link)                   { n.credits++ }
func (n *flowNode) detached(*link)                 { n.gone++ }

func newFlowHarness(t *testing.T, role encoding.Role) *flowHarness {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := newConn(New(Options{}), a)
	s := newSession(c, 0, 0, &frames.PerformBegin{IncomingWindow: 1000})
	n := &flowNode{}
	l := &link{s: s, node: n, role: role, localHandle: 7}
	return &flowHarness{t: t, c: c, s: s, l: l, n: n}
}

// sent returns the performatives queued since the last call.
func (h *flowHarness) sent() []frames.FrameBody {
	h.t.Helper()
	h.c.outMu.Lock()
	q := h.c.outQ
	h.c.outQ = nil
	h.c.outMu.Unlock()
	var out []frames.FrameBody
	for _, raw := range q {
		_, body, err := readFrame(bufio.NewReader(bytes.NewReader(raw)), 1<<20)
		if err != nil {
			h.t.Fatalf("reading a frame the hub sent: %v", err)
		}
		fb, err := decodeBody(body)
		if err != nil {
			h.t.Fatalf("decoding a frame the hub sent: %v", err)
		}
		out = append(out, fb)
	}
	return out
}

func (h *flowHarness) queue(n int, size int) {
	for i := 0; i < n; i++ {
		h.l.queue = append(h.l.queue, &outDelivery{link: h.l, tag: []byte{byte(i)}, payload: bytes.Repeat([]byte{'x'}, size), ref: string(rune('a' + i))})
	}
}

func u32(v uint32) *uint32 { return &v }

func transfers(t *testing.T, fbs []frames.FrameBody) []*frames.PerformTransfer {
	t.Helper()
	var out []*frames.PerformTransfer
	for _, fb := range fbs {
		tr, ok := fb.(*frames.PerformTransfer)
		if !ok {
			t.Fatalf("the hub sent %T, want only transfers", fb)
		}
		out = append(out, tr)
	}
	return out
}

// Credit is the peer's delivery-count plus its link-credit minus ours: a flow that crossed our
// transfers on the wire (its delivery-count is behind) grants only what is left, never more.
func TestFlowCreditCountsFromThePeersDeliveryCount(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.queue(5, 10)
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(2)})
	if got := transfers(t, h.sent()); len(got) != 2 || *got[0].DeliveryID != 0 || *got[1].DeliveryID != 1 {
		t.Fatalf("credit 2 with 5 queued: %d transfers, want deliveries 0 and 1", len(got))
	}
	if h.n.credits != 1 {
		t.Errorf("the node was told of credit %d times, want once per flow", h.n.credits)
	}
	// The peer's flow was sent before it saw our two transfers: delivery-count 0, credit 3 means
	// three deliveries in all, one of which is left.
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(3)})
	if got := transfers(t, h.sent()); len(got) != 1 {
		t.Fatalf("a stale flow (delivery-count 0, credit 3, 2 sent): %d transfers, want 1", len(got))
	}
	// Without a delivery-count the peer has seen none of ours (§2.7.4: it starts from the
	// initial count, 0 here): credit 4 is one more delivery.
	h.l.flow(&frames.PerformFlow{Handle: u32(7), LinkCredit: u32(4)})
	if got := transfers(t, h.sent()); len(got) != 1 || len(h.l.queue) != 1 {
		t.Fatalf("flow without delivery-count, credit 4 after 3 sent: %d transfers, %d queued; want 1 and 1", len(got), len(h.l.queue))
	}
	// A flow without link-credit changes nothing.
	h.l.flow(&frames.PerformFlow{Handle: u32(7)})
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("flow without link-credit sent %d frames", len(got))
	}
	if h.l.deliveryCount != 4 || len(h.s.unsettled) != 4 {
		t.Fatalf("delivery-count %d, %d unsettled; want 4 and 4", h.l.deliveryCount, len(h.s.unsettled))
	}
}

// Drain with nothing to send uses the credit up: delivery-count advances by the credit, the
// credit goes to 0, and the hub says so in a flow at once (the peer's drain waits for it).
// Echo asks for our link state without draining.
func TestFlowDrainAndEcho(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.queue(1, 10)
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(5), Drain: true})
	got := h.sent()
	if len(got) != 2 {
		t.Fatalf("drain with 1 queued and credit 5: %d frames, want a transfer and a flow", len(got))
	}
	if _, ok := got[0].(*frames.PerformTransfer); !ok {
		t.Fatalf("first frame %T, want the queued transfer", got[0])
	}
	f, ok := got[1].(*frames.PerformFlow)
	if !ok || f.LinkCredit == nil || *f.LinkCredit != 0 || f.DeliveryCount == nil || *f.DeliveryCount != 5 || *f.Handle != 7 {
		t.Fatalf("after drain: %+v, want a flow on handle 7 with link-credit 0 and delivery-count 5", got[1])
	}
	// Drain with more queued than credit: the deliveries use the credit up, and the flow state
	// still follows (credit 0), because the peer's drain waits for it.
	h.queue(3, 10)
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(5), LinkCredit: u32(2), Drain: true})
	got = h.sent()
	if len(got) != 3 || len(h.l.queue) != 1 {
		t.Fatalf("drain with credit 2 and 3 queued: %d frames, %d queued; want 2 transfers and a flow, 1 queued", len(got), len(h.l.queue))
	}
	if f, ok := got[2].(*frames.PerformFlow); !ok || *f.LinkCredit != 0 || *f.DeliveryCount != 7 {
		t.Fatalf("drain that the deliveries used up ended with %+v, want a flow: credit 0, delivery-count 7", got[2])
	}
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(7), LinkCredit: u32(0), Echo: true})
	got = h.sent()
	if len(got) != 1 {
		t.Fatalf("echo: %d frames, want one flow", len(got))
	}
	if f, ok := got[0].(*frames.PerformFlow); !ok || *f.LinkCredit != 0 || *f.DeliveryCount != 7 {
		t.Fatalf("echo answered %+v, want our state: credit 0, delivery-count 7", got[0])
	}
	// A drain the peer's session window holds back ends when the window opens.
	h.s.remoteIncomingWindow = 0
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(7), LinkCredit: u32(3), Drain: true})
	if got := h.sent(); len(got) != 0 {
		t.Fatalf("drain with the peer's window closed: %d frames, want none yet", len(got))
	}
	h.s.remoteIncomingWindow = 10
	h.l.pump()
	got = h.sent()
	if len(got) != 2 || len(h.l.queue) != 0 {
		t.Fatalf("window opened during a drain: %d frames, %d queued; want the transfer and a flow", len(got), len(h.l.queue))
	}
	if f, ok := got[1].(*frames.PerformFlow); !ok || *f.LinkCredit != 0 || *f.DeliveryCount != 10 {
		t.Fatalf("drain ended with %+v, want credit 0 and delivery-count 10 (8 sent + 2 drained)", got[1])
	}
	if h.l.pump() || len(h.sent()) != 0 {
		t.Fatal("a drain answered twice")
	}
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(10), LinkCredit: u32(0), Echo: true})
	if got := h.sent(); len(got) != 1 || *got[0].(*frames.PerformFlow).DeliveryCount != 10 {
		t.Fatalf("echo after the drains: %v", got)
	}
	// A drain the peer withdraws (its next flow without drain) before the window opens is not
	// answered: the credit stays the peer's to use.
	h.queue(1, 10)
	h.s.remoteIncomingWindow = 0
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(10), LinkCredit: u32(3), Drain: true})
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(10), LinkCredit: u32(3)})
	h.s.remoteIncomingWindow = 10
	h.l.pump()
	if got := h.sent(); len(got) != 1 || h.l.credit != 2 {
		t.Fatalf("withdrawn drain: %d frames, credit %d; want the transfer alone and credit 2 left", len(got), h.l.credit)
	}
	// Where the hub receives, echo is answered too, with the credit the hub gave.
	r := newFlowHarness(t, encoding.RoleReceiver)
	r.l.giveCredit(10)
	r.sent()
	r.l.flow(&frames.PerformFlow{Handle: u32(7), Echo: true})
	if got := r.sent(); len(got) != 1 || *got[0].(*frames.PerformFlow).LinkCredit != 10 {
		t.Fatalf("echo on a receiving link: %v, want one flow with credit 10", got)
	}
	r.l.flow(&frames.PerformFlow{Handle: u32(7), LinkCredit: u32(99)})
	if got := r.sent(); len(got) != 0 || r.l.credit != 10 {
		t.Fatalf("the peer's link-credit on a link where the hub receives changed it: %d frames, credit %d", len(got), r.l.credit)
	}
}

// A delivery larger than the peer's max-frame-size goes out in as many transfers as it needs,
// delivery-id and tag on the first, more on all but the last; it waits while the peer's session
// window cannot take all of them.
func TestTransferSplitAndSessionWindow(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.c.peerMax = 512
	h.s.remoteIncomingWindow = 2
	h.queue(1, 1000) // 3 frames of at most 512 bytes
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(1)})
	if got := h.sent(); len(got) != 0 || len(h.l.queue) != 1 {
		t.Fatalf("a 3-frame delivery with the peer's window at 2: %d frames sent, want none (it waits)", len(got))
	}
	h.s.remoteIncomingWindow = 3
	h.l.pump()
	raw := h.c.outQ
	got := transfers(t, h.sent())
	if len(got) != 3 {
		t.Fatalf("%d transfers, want 3", len(got))
	}
	var payload []byte
	for i, tr := range got {
		if len(raw[i]) > 512 {
			t.Errorf("transfer %d is %d bytes, over the peer's max-frame-size 512", i, len(raw[i]))
		}
		if (i == 0) != (tr.DeliveryID != nil) || tr.More != (i < 2) {
			t.Errorf("transfer %d: delivery-id %v, more %v", i, tr.DeliveryID, tr.More)
		}
		payload = append(payload, tr.Payload...)
	}
	if !bytes.Equal(got[0].DeliveryTag, []byte{0}) || len(payload) != 1000 {
		t.Fatalf("tag %x, %d bytes reassembled; want tag 00 and 1000 bytes", got[0].DeliveryTag, len(payload))
	}
	if h.s.remoteIncomingWindow != 0 || h.s.nextOutgoingID != 3 {
		t.Fatalf("peer window %d, next-outgoing-id %d after 3 frames; want 0 and 3", h.s.remoteIncomingWindow, h.s.nextOutgoingID)
	}
}

func detachCondition(t *testing.T, fbs []frames.FrameBody) string {
	t.Helper()
	if len(fbs) != 1 {
		t.Fatalf("%d frames, want one detach", len(fbs))
	}
	d, ok := fbs[0].(*frames.PerformDetach)
	if !ok || d.Error == nil || !d.Closed {
		t.Fatalf("sent %+v, want a closing detach with an error", fbs[0])
	}
	return string(d.Error.Condition) + ": " + d.Error.Description
}

// Where the hub receives, a transfer beyond the credit it gave detaches the link with
// transfer-limit-exceeded; credit is topped up only when half of it is used.
func TestTransferBeyondCreditDetaches(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleReceiver)
	h.l.giveCredit(4)
	if f := h.sent(); len(f) != 1 || *f[0].(*frames.PerformFlow).LinkCredit != 4 {
		t.Fatalf("giving credit 4 sent %v", f)
	}
	for i := uint32(0); i < 2; i++ {
		h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(i), DeliveryTag: []byte{byte(i)}, Payload: []byte("m"), Settled: true})
	}
	h.l.giveCredit(4)
	if f := h.sent(); len(f) != 0 || h.l.credit != 2 {
		t.Fatalf("credit 2 of 4 left: %d frames, credit %d; want no flow yet (half is left)", len(f), h.l.credit)
	}
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(2), Payload: []byte("m"), Settled: true})
	h.l.giveCredit(4)
	if f := h.sent(); len(f) != 1 || h.l.credit != 4 {
		t.Fatalf("credit 1 of 4 left: %d frames, credit %d; want a flow back to 4", len(f), h.l.credit)
	}
	for i := uint32(3); i < 7; i++ {
		h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(i), Payload: []byte("m"), Settled: true})
	}
	if len(h.n.msgs) != 7 || len(h.sent()) != 0 {
		t.Fatalf("%d messages within credit, want 7", len(h.n.msgs))
	}
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(7), Payload: []byte("m"), Settled: true})
	if c := detachCondition(t, h.sent()); !strings.HasPrefix(c, "amqp:link:transfer-limit-exceeded") {
		t.Fatalf("transfer without credit: %s", c)
	}
	if len(h.n.msgs) != 7 || h.n.gone != 1 {
		t.Fatalf("after the refused transfer: %d messages, node told of the detach %d times; want 7 and 1", len(h.n.msgs), h.n.gone)
	}
	h.l.giveCredit(4)
	if f := h.sent(); len(f) != 0 {
		t.Fatalf("credit given on a detached link: %v", f)
	}
}

// An aborted delivery is dropped (its frames are not a message, and the credit it used stays
// used); the next one is assembled from scratch. A transfer where the hub sends, a first transfer
// without delivery-id, or a tag over 32 bytes detaches the link.
func TestTransferAbortedAndMalformed(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleReceiver)
	h.l.giveCredit(10)
	h.sent()
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(0), Payload: []byte("part"), More: true})
	h.l.transfer(&frames.PerformTransfer{Handle: 1, Aborted: true})
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(1), Payload: []byte("whole"), More: true})
	h.l.transfer(&frames.PerformTransfer{Handle: 1, Payload: []byte("!")})
	if len(h.n.msgs) != 1 || string(h.n.msgs[0]) != "whole!" || h.l.credit != 8 {
		t.Fatalf("after an aborted and a two-frame delivery: %q, credit %d; want [whole!] and 8", h.n.msgs, h.l.credit)
	}
	h.l.transfer(&frames.PerformTransfer{Handle: 1, Payload: []byte("x")})
	if c := detachCondition(t, h.sent()); !strings.HasPrefix(c, "amqp:invalid-field") {
		t.Fatalf("first transfer without delivery-id: %s", c)
	}

	h = newFlowHarness(t, encoding.RoleReceiver)
	h.l.giveCredit(10)
	h.sent()
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(0), DeliveryTag: bytes.Repeat([]byte{1}, 32), Payload: []byte("ok")})
	h.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(1), DeliveryTag: bytes.Repeat([]byte{1}, 33), Payload: []byte("x")})
	if c := detachCondition(t, h.sent()); !strings.HasPrefix(c, "amqp:invalid-field") || !strings.Contains(c, "33 bytes") || len(h.n.msgs) != 1 {
		t.Fatalf("33-byte delivery-tag: %s (%d messages, want the 32-byte one only)", c, len(h.n.msgs))
	}

	s := newFlowHarness(t, encoding.RoleSender)
	s.l.transfer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(0), Payload: []byte("x")})
	if c := detachCondition(t, s.sent()); !strings.HasPrefix(c, "amqp:not-allowed") {
		t.Fatalf("transfer on a link where the hub sends: %s", c)
	}
}
