package amqp

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// The connection as the peer sees it (AMQP 1.0 §2.4.5, §2.7.1): what the peer's open sets
// (max-frame-size, channel-max, idle-time-out), the channels the hub takes, the empty frames
// either side sends, and a frame the hub refuses ending the connection. Like link_pin_test.go,
// each property is stated from the specification; here the peer writes real frames into the
// connection's socket where the reader needs them.

// wire gives the harness's connection a socket whose other end the test writes; the connection's
// timers and heartbeats end with the test.
func (h *flowHarness) wire() net.Conn {
	h.t.Helper()
	a, b := net.Pipe()
	h.t.Cleanup(func() { a.Close(); b.Close(); close(h.c.done) })
	h.c.nc, h.c.r = a, bufio.NewReaderSize(a, 4<<10)
	return b
}

// write has the peer write frames (performatives on channel 0, or raw bytes) in the background:
// writes to a pipe wait for the reader.
func (h *flowHarness) write(peer net.Conn, parts ...any) <-chan error {
	h.t.Helper()
	var raw []byte
	for _, p := range parts {
		switch p := p.(type) {
		case []byte:
			raw = append(raw, p...)
		case frames.FrameBody:
			b, err := encodeFrame(frames.TypeAMQP, 0, p)
			if err != nil {
				h.t.Fatalf("encoding %T: %v", p, err)
			}
			raw = append(raw, b...)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := peer.Write(raw)
		done <- err
	}()
	return done
}

// open hands the hub the peer's open o and returns the hub's open and what readOpen returned.
func (h *flowHarness) open(o *frames.PerformOpen) (*frames.PerformOpen, error) {
	h.t.Helper()
	peer := h.wire()
	wrote := h.write(peer, o)
	err := h.c.readOpen()
	select {
	case werr := <-wrote:
		if werr != nil {
			h.t.Fatalf("writing the peer's open: %v", werr)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatal("the peer's open was not read within 5 s")
	}
	got := h.sent()
	hub, ok := got[0].(*frames.PerformOpen)
	if len(got) != 1 || !ok {
		h.t.Fatalf("the peer's open answered with %v, want an open", got)
	}
	return hub, err
}

// sentOn returns the frames queued since the last call with the channel of each.
func (h *flowHarness) sentOn() (chans []uint16, fbs []frames.FrameBody) {
	h.t.Helper()
	h.c.outMu.Lock()
	q := h.c.outQ
	h.c.outQ = nil
	h.c.outMu.Unlock()
	for _, raw := range q {
		hdr, body, err := readFrame(bufio.NewReader(bytes.NewReader(raw)), 1<<20)
		if err != nil {
			h.t.Fatalf("reading a frame the hub sent: %v", err)
		}
		fb, err := decodeBody(body)
		if err != nil {
			h.t.Fatalf("decoding a frame the hub sent: %v", err)
		}
		chans, fbs = append(chans, hdr.Channel), append(fbs, fb)
	}
	return chans, fbs
}

// on hands the hub one frame on the peer's channel ch and returns the hub's error.
func (h *flowHarness) on(ch uint16, fb frames.FrameBody) error {
	h.t.Helper()
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	_, err := h.c.handle(ch, fb)
	return err
}

func closeCondition(err error) encoding.ErrCond {
	var pe *protoError
	if !errors.As(err, &pe) {
		return ""
	}
	return pe.e.Condition
}

// §2.7.1 max-frame-size: the largest frame the peer accepts. With 600 in its open, a delivery
// of 2000 bytes reaches it in frames of at most 600 bytes.
func TestPeersMaxFrameSizeBoundsTheHubsFrames(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	if _, err := h.open(&frames.PerformOpen{ContainerID: "peer", MaxFrameSize: 600}); err != nil {
		t.Fatalf("open with max-frame-size 600: %v", err)
	}
	h.s.remoteIncomingWindow = 100
	h.queue(1, 2000)
	h.l.flow(&frames.PerformFlow{Handle: u32(7), DeliveryCount: u32(0), LinkCredit: u32(1)})
	raw := h.c.outQ
	got := transfers(t, h.sent())
	if len(got) < 4 {
		t.Fatalf("2000 bytes in %d transfers, want at least 4 of at most 600 bytes", len(got))
	}
	for i := range got {
		if len(raw[i]) > 600 {
			t.Fatalf("transfer %d is %d bytes, over the peer's max-frame-size 600", i, len(raw[i]))
		}
	}
}

// §2.7.1 channel-max: the hub's channels stay within the peer's channel-max (1 here: channels
// 0 and 1), a channel the peer's end freed is taken again, and a session beyond them is refused,
// closing the connection with resource-limit-exceeded (the peer began more sessions than its own
// channel-max admits).
func TestHubsChannelsStayWithinThePeersChannelMax(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	if _, err := h.open(&frames.PerformOpen{ContainerID: "peer", ChannelMax: 1}); err != nil {
		t.Fatalf("open with channel-max 1: %v", err)
	}
	begin := &frames.PerformBegin{NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100, HandleMax: 10}
	used := map[uint16]uint16{} // peer channel → hub channel
	for _, ch := range []uint16{3, 8} {
		if err := h.on(ch, begin); err != nil {
			t.Fatalf("begin on channel %d: %v", ch, err)
		}
		chans, got := h.sentOn()
		b, ok := got[0].(*frames.PerformBegin)
		if len(got) != 1 || !ok || b.RemoteChannel == nil || *b.RemoteChannel != ch || chans[0] > 1 {
			t.Fatalf("begin on channel %d answered with %v on channel %v, want a begin on channel 0 or 1", ch, got, chans)
		}
		used[ch] = chans[0]
	}
	if used[3] == used[8] {
		t.Fatalf("two sessions on the hub's channel %d", used[3])
	}
	if err := h.on(3, &frames.PerformEnd{}); err != nil {
		t.Fatalf("end of the session on channel 3: %v", err)
	}
	if chans, got := h.sentOn(); len(got) != 1 || chans[0] != used[3] {
		t.Fatalf("end on channel 3 answered with %v on %v, want an end on the hub's channel %d", got, chans, used[3])
	}
	if err := h.on(9, begin); err != nil {
		t.Fatalf("begin on channel 9 after the end: %v", err)
	}
	if chans, _ := h.sentOn(); len(chans) != 1 || chans[0] != used[3] {
		t.Fatalf("a session begun after the end of the hub's channel %d got channel %v, want it again", used[3], chans)
	}
	if err := h.on(5, begin); closeCondition(err) != condResourceLimit {
		t.Fatalf("a third session with the peer's channel-max 1: %v, want a close with %s", err, condResourceLimit)
	}
	if _, got := h.sentOn(); len(got) != 0 {
		t.Fatalf("a third session with the peer's channel-max 1 was answered with %v", got)
	}
}

// §2.7.1 channel-max: a begin on the hub's channel-max itself is a session; one on a channel
// past it is outside the range the hub supports, and "a peer that receives a channel number
// outside the supported range MUST close the connection with the framing-error error-code".
func TestBeginOnTheHubsChannelMaxIsAcceptedAndBeyondItClosesTheConnection(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	hub, err := h.open(&frames.PerformOpen{ContainerID: "peer"})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	begin := &frames.PerformBegin{NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100, HandleMax: 10}
	if err := h.on(hub.ChannelMax, begin); err != nil {
		t.Fatalf("begin on the hub's channel-max %d: %v", hub.ChannelMax, err)
	}
	if _, got := h.sentOn(); len(got) != 1 {
		t.Fatalf("begin on the hub's channel-max answered with %v, want a begin", got)
	}
	if err := h.on(hub.ChannelMax+1, begin); closeCondition(err) != condFraming {
		t.Fatalf("begin on channel-max+1: %v, want a close with %s", err, condFraming)
	}
}

// §2.4.5: empty frames only reset the idle timer. A peer that sends nothing but empty frames for
// longer than the hub's idle-time-out (400 ms, silent for at most 500 ms) stays connected, and the
// frames after them are handled as if the empty ones were not there.
func TestPeersEmptyFramesKeepTheConnectionAndAreSkipped(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.c.srv.opt.IdleTimeout = 400 * time.Millisecond
	peer := h.wire()
	done := make(chan error, 1)
	go func() { done <- h.c.run() }()
	first := h.write(peer, headerAMQP, &frames.PerformOpen{ContainerID: "peer"})
	wait := func(what string, ch <-chan error) {
		t.Helper()
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not read within 5 s", what)
		}
	}
	wait("header and open", first)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 10 { // 1 s of empty frames, one every 100 ms
		select {
		case err := <-done:
			t.Fatalf("the hub ended the connection while the peer sent empty frames: %v", err)
		case <-tick.C:
		}
		wait("an empty frame", h.write(peer, heartbeat))
	}
	wait("begin and close", h.write(peer, heartbeat, &frames.PerformBegin{NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100}, &frames.PerformClose{}))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the connection ended with %v, want the peer's close", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's close did not end the connection within 5 s")
	}
	h.dropHeader()
	var kinds []string
	_, got := h.sentOn()
	for _, fb := range got {
		switch fb.(type) {
		case *frames.PerformOpen:
			kinds = append(kinds, "open")
		case *frames.PerformBegin:
			kinds = append(kinds, "begin")
		case *frames.PerformClose:
			kinds = append(kinds, "close")
		default:
			kinds = append(kinds, "other")
		}
	}
	if len(kinds) != 3 || kinds[0] != "open" || kinds[1] != "begin" || kinds[2] != "close" {
		t.Fatalf("the hub sent %v, want open, begin, close", kinds)
	}
}

// A frame the hub refuses (a second open, §2.4.1) ends the connection at once, with a close
// carrying the error.
func TestRefusedFrameEndsTheConnection(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	peer := h.wire()
	done := make(chan error, 1)
	go func() { done <- h.c.run() }()
	h.write(peer, headerAMQP, &frames.PerformOpen{ContainerID: "peer"}, &frames.PerformOpen{ContainerID: "peer"})
	select {
	case err := <-done:
		if closeCondition(err) != condNotAllowed {
			t.Fatalf("a second open ended the connection with %v, want %s", err, condNotAllowed)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second open did not end the connection within 5 s")
	}
	h.dropHeader()
	_, got := h.sentOn()
	if c, ok := got[len(got)-1].(*frames.PerformClose); !ok || c.Error == nil || c.Error.Condition != condNotAllowed {
		t.Fatalf("the hub's last frame %v, want a close with %s", got[len(got)-1], condNotAllowed)
	}
}

// dropHeader takes the protocol header the hub wrote first out of its queue.
func (h *flowHarness) dropHeader() {
	h.t.Helper()
	h.c.outMu.Lock()
	defer h.c.outMu.Unlock()
	if len(h.c.outQ) == 0 || !bytes.Equal(h.c.outQ[0], headerAMQP) {
		h.t.Fatal("the hub did not write the AMQP protocol header first")
	}
	h.c.outQ = h.c.outQ[1:]
}

// §2.4.5: the hub keeps the peer's idle timer from firing, sending a frame within the peer's
// idle-time-out (an empty one when it has nothing else to say).
func TestHubSendsEmptyFramesWithinThePeersIdleTimeout(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	const idle = 2 * time.Second
	if _, err := h.open(&frames.PerformOpen{ContainerID: "peer", IdleTimeout: idle}); err != nil {
		t.Fatalf("open with idle-time-out %v: %v", idle, err)
	}
	select { // the wake-up for the hub's open
	case <-h.c.outWake:
	default:
	}
	select {
	case <-h.c.outWake:
	case <-time.After(idle):
		t.Fatalf("the hub sent nothing within the peer's idle-time-out %v", idle)
	}
	h.c.outMu.Lock()
	q := h.c.outQ
	h.c.outQ = nil
	h.c.outMu.Unlock()
	if len(q) == 0 || !bytes.Equal(q[0], heartbeat) {
		t.Fatalf("the hub sent %x, want an empty frame", q)
	}
}

// §2.4.5: "There is no requirement for peers to support arbitrarily short ... idle timeouts";
// one the hub cannot keep to is refused with a close that says why (after the hub's own open,
// §2.4.1). The hub keeps to 1 s and more.
func TestPeersIdleTimeoutTooShortIsRefused(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	if _, err := h.open(&frames.PerformOpen{ContainerID: "peer", IdleTimeout: time.Second - time.Millisecond}); closeCondition(err) != condResourceLimit {
		t.Fatalf("open with idle-time-out 999 ms: %v, want a close with %s", err, condResourceLimit)
	}
	h = newFlowHarness(t, encoding.RoleSender)
	if _, err := h.open(&frames.PerformOpen{ContainerID: "peer", IdleTimeout: time.Second}); err != nil {
		t.Fatalf("open with idle-time-out 1 s: %v", err)
	}
}

// §2.4.5: the idle-time-out the hub announces (1 s here) is the silence it allows, and "SHOULD be
// half the peer's actual timeout threshold": a silent peer is closed with a close saying why
// (amqp:connection:forced), not before the announced idle-time-out and not after twice it.
func TestSilentPeerIsClosedBetweenTheIdleTimeoutAndTwiceIt(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	const idle = time.Second
	h.c.srv.opt.IdleTimeout = idle
	peer := h.wire()
	done := make(chan error, 1)
	go func() { done <- h.c.run() }()
	select {
	case err := <-h.write(peer, headerAMQP, &frames.PerformOpen{ContainerID: "peer"}):
		if err != nil {
			t.Fatalf("writing the header and open: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the header and open were not read within 5 s")
	}
	start := time.Now()
	select {
	case err := <-done:
		if took := time.Since(start); took < idle || took > 2*idle {
			t.Fatalf("a silent peer was closed after %v, want between %v and %v", took, idle, 2*idle)
		}
		if closeCondition(err) != condForced {
			t.Fatalf("a silent peer was closed with %v, want %s", err, condForced)
		}
	case <-time.After(10 * idle):
		t.Fatalf("a silent peer was not closed within %v", 10*idle)
	}
	h.dropHeader()
	_, got := h.sentOn()
	if c, ok := got[len(got)-1].(*frames.PerformClose); !ok || c.Error == nil || c.Error.Condition != condForced {
		t.Fatalf("the hub's last frame %v, want a close with %s", got[len(got)-1], condForced)
	}
}
