package amqp

import (
	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

const (
	// sessionWindow is our incoming and outgoing window in transfer frames; we widen the incoming
	// one again once half of it is used.
	sessionWindow = 2048
	handleMax     = 1023
)

// session is one begun session (§2.5). Its fields are guarded by conn.mu.
type session struct {
	c             *conn
	remote, local uint16 // channels

	// incoming transfers (§2.5.6)
	nextIncomingID uint32
	incomingWindow uint32

	// outgoing transfers
	nextOutgoingID       uint32
	remoteIncomingWindow uint32
	nextDeliveryID       uint32
	unsettled            map[uint32]*outDelivery // our deliveries the peer has not settled

	links         map[uint32]*link // by the peer's handle
	handles       map[uint32]bool  // our handles in use
	peerHandleMax uint32           // the highest handle the peer can take (its begin's handle-max)
	ended         bool             // we sent end
}

func newSession(c *conn, remote, local uint16, b *frames.PerformBegin) *session {
	return &session{
		c: c, remote: remote, local: local,
		nextIncomingID:       b.NextOutgoingID,
		incomingWindow:       sessionWindow,
		remoteIncomingWindow: b.IncomingWindow,
		unsettled:            map[uint32]*outDelivery{},
		links:                map[uint32]*link{},
		handles:              map[uint32]bool{},
		peerHandleMax:        b.HandleMax,
	}
}

func (s *session) send(fb frames.FrameBody) { s.c.send(s.local, fb) }

func (s *session) handle(fb frames.FrameBody) error {
	if _, isEnd := fb.(*frames.PerformEnd); s.ended && !isEnd {
		return nil // we ended the session: ignore what crossed our end on the wire
	}
	switch b := fb.(type) {
	case *frames.PerformEnd:
		if !s.ended {
			s.send(&frames.PerformEnd{})
		}
		s.drop()
		s.c.endSession(s)
		return nil
	case *frames.PerformAttach:
		return s.attach(b)
	case *frames.PerformFlow:
		return s.flow(b)
	case *frames.PerformTransfer:
		return s.transfer(b)
	case *frames.PerformDisposition:
		s.disposition(b)
		return nil
	case *frames.PerformDetach:
		l := s.links[b.Handle]
		if l == nil {
			return s.end(amqpError(condUnattachedHandle, "detach of handle %d, which is not attached", b.Handle))
		}
		l.peerDetached(b)
		return nil
	}
	return closeWith(condNotAllowed, "unexpected %T in a session", fb)
}

// end ends the session with an error (a session-level fault of the peer).
func (s *session) end(e *encoding.Error) error {
	if !s.ended {
		s.ended = true
		s.send(&frames.PerformEnd{Error: e})
		s.drop()
	}
	return nil
}

// drop detaches every link locally (the session or the connection is going away).
func (s *session) drop() {
	for _, l := range s.links {
		l.gone()
	}
	s.links = map[uint32]*link{}
}

func (s *session) flow(b *frames.PerformFlow) error {
	next := uint32(0)
	if b.NextIncomingID != nil {
		next = *b.NextIncomingID
	}
	s.remoteIncomingWindow = next + b.IncomingWindow - s.nextOutgoingID
	if b.Handle != nil {
		l := s.links[*b.Handle]
		if l == nil {
			return s.end(amqpError(condUnattachedHandle, "flow for handle %d, which is not attached", *b.Handle))
		}
		l.flow(b)
	} else if b.Echo {
		s.sendFlow(nil)
	}
	for _, l := range s.links {
		l.pump()
	}
	return nil
}

// sendFlow sends our session state, with l's link state when l is set.
func (s *session) sendFlow(l *link) {
	next := s.nextIncomingID
	f := &frames.PerformFlow{
		NextIncomingID: &next,
		IncomingWindow: s.incomingWindow,
		NextOutgoingID: s.nextOutgoingID,
		OutgoingWindow: sessionWindow,
	}
	if l != nil {
		h, dc, cr := l.localHandle, l.deliveryCount, l.credit
		f.Handle, f.DeliveryCount, f.LinkCredit = &h, &dc, &cr
	}
	s.send(f)
}

func (s *session) transfer(t *frames.PerformTransfer) error {
	s.nextIncomingID++
	if s.incomingWindow == 0 {
		return s.end(amqpError(condWindowViolation, "transfer beyond the incoming window of %d frames", sessionWindow))
	}
	s.incomingWindow--
	if s.incomingWindow < sessionWindow/2 {
		s.incomingWindow = sessionWindow
		s.sendFlow(nil)
	}
	l := s.links[t.Handle]
	if l == nil {
		return s.end(amqpError(condUnattachedHandle, "transfer on handle %d, which is not attached", t.Handle))
	}
	l.transfer(t)
	return nil
}

// disposition applies the peer's settlement of deliveries we sent (role receiver). Dispositions
// with role sender concern deliveries the peer sent; we settle those first, so there is nothing to do.
func (s *session) disposition(d *frames.PerformDisposition) {
	if d.Role != encoding.RoleReceiver {
		return
	}
	last := d.First
	if d.Last != nil {
		last = *d.Last
	}
	apply := func(id uint32, od *outDelivery) {
		if d.State == nil && !d.Settled {
			return // a non-terminal state (received): nothing to do
		}
		delete(s.unsettled, id)
		if od.link.detached {
			return
		}
		if !d.Settled {
			// The peer settles second: confirm that we saw its outcome.
			s.send(&frames.PerformDisposition{Role: encoding.RoleSender, First: id, Settled: true, State: d.State})
		}
		od.link.node.settled(od.link, od, d.State)
	}
	// A range may be as wide as 2^32: walk the deliveries we have, not the range.
	if uint64(last-d.First) >= uint64(len(s.unsettled)) {
		for id, od := range s.unsettled {
			if id-d.First <= last-d.First {
				apply(id, od)
			}
		}
		return
	}
	for id := d.First; ; id++ {
		if od := s.unsettled[id]; od != nil {
			apply(id, od)
		}
		if id == last {
			break
		}
	}
}
