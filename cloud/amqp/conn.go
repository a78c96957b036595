package amqp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

const (
	// handshakeTimeout bounds the protocol headers, SASL and open.
	handshakeTimeout = 30 * time.Second
	// preOpenMaxFrame is what we read before open settles max-frame-size. The spec's minimum is
	// 512; SASL PLAIN with a long token needs more.
	preOpenMaxFrame = 16 << 10
	// writeTimeout bounds one write to the socket: a peer that stops reading is dropped.
	writeTimeout = 30 * time.Second
	channelMax   = 255
	// minPeerIdleTimeout is the shortest idle-time-out of the peer's open we keep to: we send
	// heartbeats at half of it, at most every 500 ms.
	minPeerIdleTimeout = time.Second
)

// conn is one AMQP connection. Everything below mu is the protocol state; the reader goroutine
// (serve) holds mu while it handles a frame.
type conn struct {
	srv  *Server
	nc   net.Conn
	r    *bufio.Reader
	log  *slog.Logger
	done chan struct{} // closed when the connection is finished

	mu        sync.Mutex
	sessions  map[uint16]*session // by the peer's channel
	local     map[uint16]bool     // our channels in use
	peerMax   uint32              // the peer's max-frame-size: the largest frame we may send
	peerChans uint16
	ending    bool // close sent or received: no more frames are handled
	auth      authState
	cbsOut    *link    // the $cbs receiver link replies go to
	tags      uint32   // last tag of a pre-settled delivery
	later     []func() // run by serve once mu is released (hub calls that take hub locks)

	outMu   sync.Mutex
	outQ    [][]byte
	outWake chan struct{}
	outEnd  bool // after the queued frames, close the socket
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		srv: s, nc: nc, r: bufio.NewReaderSize(nc, 4<<10),
		log:      s.log.With("remote", nc.RemoteAddr().String()),
		done:     make(chan struct{}),
		sessions: map[uint16]*session{}, local: map[uint16]bool{},
		peerMax: 512, outWake: make(chan struct{}, 1),
	}
}

// serve runs the connection to its end.
func (c *conn) serve() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writer()
	}()
	err := c.run()
	c.mu.Lock()
	c.shutdown()
	later := c.takeLater()
	c.mu.Unlock()
	for _, f := range later {
		f()
	}
	var pe *protoError
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug("amqp connection closed")
	case errors.As(err, &pe):
		c.log.Info("amqp connection closed with an error", "condition", pe.e.Condition, "err", pe.e.Description)
	default:
		c.log.Debug("amqp connection ended", "err", err)
	}
	c.finishWrites()
	select {
	case <-writerDone:
	case <-time.After(writeTimeout):
	}
	_ = c.nc.Close()
	close(c.done)
}

// run negotiates the protocol, then reads frames until close or an error. A protocol fault is
// answered with close carrying the AMQP error before run returns.
func (c *conn) run() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(min(handshakeTimeout, c.idleDeadline())))
	if err := c.handshake(); err != nil {
		return err
	}
	err := c.readOpen()
	if err == nil {
		err = c.loop()
	}
	var pe *protoError
	if errors.As(err, &pe) {
		c.mu.Lock()
		if !c.ending {
			c.ending = true
			c.send(0, &frames.PerformClose{Error: pe.e})
		}
		c.mu.Unlock()
	}
	return err
}

// handshake reads the protocol header(s): SASL first if the peer asks for it (uamqp, the C SDK),
// or AMQP directly (the Node SDKs).
func (c *conn) handshake() error {
	var h [8]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return err
	}
	if bytes.Equal(h[:], headerSASL) {
		c.writeRaw(headerSASL)
		if err := c.sasl(); err != nil {
			return err
		}
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return err
		}
	}
	if !bytes.Equal(h[:], headerAMQP) {
		// §2.2: answer with the header we support, then close.
		c.writeRaw(headerAMQP)
		return fmt.Errorf("protocol header %q: want AMQP 1.0 (% x) or SASL (% x)", h[:], headerAMQP, headerSASL)
	}
	c.writeRaw(headerAMQP)
	return nil
}

// readOpen reads the peer's open and answers with ours.
func (c *conn) readOpen() error {
	fb, _, err := c.readBody(preOpenMaxFrame)
	if err != nil {
		return err
	}
	open, ok := fb.(*frames.PerformOpen)
	if !ok {
		return closeWith(condNotAllowed, "first frame must be open, got %T", fb)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peerMax = max(open.MaxFrameSize, 512)
	if open.MaxFrameSize == 0 {
		c.peerMax = 1<<32 - 1
	}
	c.peerChans = open.ChannelMax
	// A connection that never authenticates is closed: an open port is not a place to park.
	t := time.AfterFunc(c.srv.opt.AuthTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.auth.grants) > 0 || c.ending {
			return
		}
		c.ending = true
		c.send(0, &frames.PerformClose{Error: amqpError(condUnauthorized,
			"no valid SAS token within %v: put one on $cbs (or use SASL PLAIN)", c.srv.opt.AuthTimeout)})
		c.finishWrites()
	})
	go func() {
		<-c.done
		t.Stop()
	}()
	c.send(0, &frames.PerformOpen{
		ContainerID:  "c2d-hub",
		Hostname:     c.srv.opt.HostName,
		MaxFrameSize: c.srv.opt.MaxFrameSize,
		ChannelMax:   channelMax,
		IdleTimeout:  c.srv.opt.IdleTimeout,
	})
	if open.IdleTimeout > 0 {
		if open.IdleTimeout < minPeerIdleTimeout {
			// §2.4.5: an idle-time-out a peer cannot keep to is refused with a close that says why.
			return closeWith(condResourceLimit, "idle-time-out %v: c2d-hub keeps to %v or more", open.IdleTimeout, minPeerIdleTimeout)
		}
		go c.heartbeats(open.IdleTimeout / 2)
	}
	return nil
}

// readBody reads frames, skipping heartbeats, and decodes the next body.
func (c *conn) readBody(maxSize uint32) (frames.FrameBody, uint16, error) {
	for {
		h, body, err := readFrame(c.r, maxSize)
		if err != nil {
			if errors.Is(err, errFraming) {
				return nil, 0, closeWith(condFraming, "%v", err)
			}
			return nil, 0, err
		}
		if body == nil {
			if c.srv.opt.IdleTimeout > 0 {
				_ = c.nc.SetReadDeadline(time.Now().Add(c.idleDeadline()))
			}
			continue
		}
		fb, err := decodeBody(body)
		if err != nil {
			return nil, 0, closeWith(condDecode, "frame on channel %d: %v", h.Channel, err)
		}
		if want := frames.Type(h.FrameType); (want == frames.TypeSASL) != isSASL(fb) {
			return nil, 0, closeWith(condFraming, "%T in a frame of type %d", fb, h.FrameType)
		}
		return fb, h.Channel, nil
	}
}

func isSASL(fb frames.FrameBody) bool {
	switch fb.(type) {
	case *frames.SASLInit, *frames.SASLResponse, *frames.SASLMechanisms, *frames.SASLChallenge, *frames.SASLOutcome:
		return true
	}
	return false
}

// idleDeadline is how long the peer may stay silent: our advertised idle-time-out plus a margin
// for the network (peers send at half of it).
func (c *conn) idleDeadline() time.Duration { return c.srv.opt.IdleTimeout + c.srv.opt.IdleTimeout/4 }

func (c *conn) loop() error {
	for {
		if c.srv.opt.IdleTimeout > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.idleDeadline()))
		} else {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		fb, ch, err := c.readBody(c.srv.opt.MaxFrameSize)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return closeWith(condForced, "nothing received for %v (idle-time-out %v)", c.idleDeadline(), c.srv.opt.IdleTimeout)
		}
		if err != nil {
			return err
		}
		c.mu.Lock()
		done, err := c.handle(ch, fb)
		later := c.takeLater()
		c.mu.Unlock()
		for _, f := range later {
			f()
		}
		if err != nil || done {
			return err
		}
	}
}

// handle dispatches one frame; mu is held. done reports the peer's close.
func (c *conn) handle(ch uint16, fb frames.FrameBody) (done bool, err error) {
	switch b := fb.(type) {
	case *frames.PerformClose:
		if !c.ending {
			c.ending = true
			c.send(0, &frames.PerformClose{})
		}
		if b.Error != nil {
			c.log.Debug("peer closed with an error", "condition", b.Error.Condition, "description", b.Error.Description)
		}
		return true, nil
	case *frames.PerformOpen:
		return false, closeWith(condNotAllowed, "second open")
	case *frames.PerformBegin:
		return false, c.begin(ch, b)
	}
	if isSASL(fb) {
		return false, closeWith(condNotAllowed, "%T after SASL", fb)
	}
	s := c.sessions[ch]
	if s == nil {
		return false, closeWith(condNotAllowed, "%T on channel %d, which has no session", fb, ch)
	}
	return false, s.handle(fb)
}

// begin maps a new session: ours is the lowest free channel the peer allows.
func (c *conn) begin(ch uint16, b *frames.PerformBegin) error {
	if b.RemoteChannel != nil {
		return closeWith(condNotAllowed, "begin with remote-channel: c2d-hub does not begin sessions")
	}
	if ch > channelMax {
		// §2.7.1 channel-max: a channel outside the range we announced closes the connection with
		// framing-error.
		return closeWith(condFraming, "begin on channel %d, above the channel-max %d of c2d-hub's open", ch, channelMax)
	}
	if c.sessions[ch] != nil {
		return closeWith(condNotAllowed, "begin on channel %d, which has a session", ch)
	}
	local := -1
	for i := 0; i <= int(min(c.peerChans, channelMax)); i++ {
		if !c.local[uint16(i)] {
			local = i
			break
		}
	}
	if local < 0 {
		// Our channel must be within the peer's channel-max (§2.7.1): it began more sessions than
		// its own channel-max admits.
		return closeWith(condResourceLimit, "no channel within the peer's channel-max %d for another session", c.peerChans)
	}
	c.local[uint16(local)] = true
	s := newSession(c, ch, uint16(local), b)
	c.sessions[ch] = s
	rc := ch
	c.send(s.local, &frames.PerformBegin{
		RemoteChannel:  &rc,
		NextOutgoingID: s.nextOutgoingID,
		IncomingWindow: s.incomingWindow,
		OutgoingWindow: sessionWindow,
		HandleMax:      handleMax,
	})
	return nil
}

// endSession forgets s (after end was sent and received).
func (c *conn) endSession(s *session) {
	delete(c.sessions, s.remote)
	delete(c.local, s.local)
}

// shutdown ends every session and link, as if the peer had detached them; mu is held.
func (c *conn) shutdown() {
	c.ending = true
	for _, s := range c.sessions {
		s.drop()
	}
	c.auth.stop()
}

// defer runs f after mu is released (for hub calls that take the hub's delivery locks).
func (c *conn) after(f func()) { c.later = append(c.later, f) }

func (c *conn) takeLater() []func() {
	l := c.later
	c.later = nil
	return l
}

// locked runs f under mu, then the calls it deferred. For goroutines reporting back (a send's
// commit, a delivery from the hub).
func (c *conn) locked(f func()) {
	c.mu.Lock()
	f()
	later := c.takeLater()
	c.mu.Unlock()
	for _, g := range later {
		g()
	}
}

// send encodes a frame and queues it; mu is held (or the connection is not yet shared).
func (c *conn) send(channel uint16, fb frames.FrameBody) {
	typ := frames.TypeAMQP
	if isSASL(fb) {
		typ = frames.TypeSASL
	}
	b, err := encodeFrame(typ, channel, fb)
	if err != nil {
		// Only our own values are encoded here: a failure is a bug, not the peer's fault.
		c.log.Error("amqp: encode frame", "frame", fmt.Sprintf("%T", fb), "err", err)
		_ = c.nc.Close()
		return
	}
	c.writeRaw(b)
}

func (c *conn) writeRaw(b []byte) {
	c.outMu.Lock()
	c.outQ = append(c.outQ, b)
	c.outMu.Unlock()
	select {
	case c.outWake <- struct{}{}:
	default:
	}
}

// finishWrites lets the writer flush what is queued, then close the socket.
func (c *conn) finishWrites() {
	c.outMu.Lock()
	c.outEnd = true
	c.outMu.Unlock()
	select {
	case c.outWake <- struct{}{}:
	default:
	}
}

// writer owns the socket's write side. It writes what is queued in one writev and keeps no
// buffer between writes, so an idle connection costs no write buffer.
func (c *conn) writer() {
	for range c.outWake {
		c.outMu.Lock()
		q, end := c.outQ, c.outEnd
		c.outQ = nil
		c.outMu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		bufs := net.Buffers(q)
		if _, err := bufs.WriteTo(c.nc); err != nil {
			_ = c.nc.Close()
			return
		}
		if end {
			_ = c.nc.Close() // the reader, if still reading, ends too
			return
		}
	}
}

// heartbeats keeps the peer's idle timer from firing (§2.4.5).
func (c *conn) heartbeats(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.writeRaw(heartbeat)
		}
	}
}
