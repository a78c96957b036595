package amqp

import (
	"strings"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

const (
	// maxMessageSize is the largest message a link assembles (a C2D message is at most 64 KB plus
	// its AMQP encoding; the hub refuses what is too large with a reason).
	maxMessageSize = 256 << 10
	// maxDeliveryTag is AMQP's limit on delivery-tag length (§2.7.5).
	maxDeliveryTag = 32
)

// node is what a link is attached to: $cbs, /messages/devicebound, the feedback source or a
// device's queue. Its methods are called with conn.mu held and must not block.
type node interface {
	// message is a complete delivery the peer sent on a link where we receive. The node settles it
	// with link.settleIn, now or later.
	message(l *link, d *inDelivery)
	// credit tells a node where we send that the peer gave credit.
	credit(l *link)
	// settled is the peer's outcome for a delivery we sent (nil state: settled without outcome).
	settled(l *link, d *outDelivery, state encoding.DeliveryState)
	// detached is called once when the link ends, whoever ended it.
	detached(l *link)
}

// inDelivery is a message the peer sent us, assembled from its transfers.
type inDelivery struct {
	id      uint32
	tag     []byte
	settled bool // the peer sent it settled (at most once): no disposition is sent
	payload []byte
}

// outDelivery is a message we send; ref is the node's handle for it (a lock token).
type outDelivery struct {
	link    *link
	tag     []byte
	payload []byte
	settled bool // sent pre-settled
	ref     string
}

// link is one attached link (§2.6). Fields are guarded by conn.mu.
type link struct {
	s            *session
	name         string
	remoteHandle uint32
	localHandle  uint32
	role         encoding.Role // ours
	address      string        // the node's address as attached (source for senders, target for receivers)
	node         node
	sndSettle    encoding.SenderSettleMode
	grant        *grant // the token the link was authorized by, if any
	detached     bool   // we sent detach, or the link is gone
	told         bool   // node.detached was called

	// where we send
	deliveryCount uint32
	credit        uint32
	queue         []*outDelivery
	draining      bool // the peer asked for a drain not yet answered

	// where we receive
	in *inDelivery
}

// attach handles the peer's attach: resolve the node, answer, and grant credit where we receive.
func (s *session) attach(a *frames.PerformAttach) error {
	if s.links[a.Handle] != nil {
		return s.end(amqpError(condHandleInUse, "attach on handle %d, which is attached", a.Handle))
	}
	if a.Handle > handleMax {
		// §2.7.2 handle-max: a handle outside the range we announced closes the connection with
		// framing-error.
		return closeWith(condFraming, "attach on handle %d, above the handle-max %d of c2d-hub's begin", a.Handle, handleMax)
	}
	var lh uint32
	for s.handles[lh] {
		lh++
	}
	if lh > s.peerHandleMax {
		// Our handle must be within the peer's handle-max (§2.7.2), and an attach cannot be refused
		// without one (§2.6.3): the peer asked for more links than its own handle-max admits.
		return s.end(amqpError(condResourceLimit, "no handle within the peer's handle-max %d for another link", s.peerHandleMax))
	}
	l := &link{s: s, name: a.Name, remoteHandle: a.Handle, localHandle: lh, role: !a.Role}
	if l.role == encoding.RoleReceiver {
		// §2.6.7: the receiver's delivery-count starts at the sender's initial-delivery-count, or
		// the sender's credit (our count plus our link-credit minus its count) is not what we gave.
		l.deliveryCount = a.InitialDeliveryCount
	}
	if a.SenderSettleMode != nil {
		l.sndSettle = *a.SenderSettleMode
	} else {
		l.sndSettle = encoding.SenderSettleModeMixed
	}
	s.handles[lh] = true
	s.links[a.Handle] = l
	reply := &frames.PerformAttach{
		Name: a.Name, Handle: lh, Role: l.role,
		SenderSettleMode: a.SenderSettleMode, ReceiverSettleMode: a.ReceiverSettleMode,
		Source: a.Source, Target: a.Target,
		MaxMessageSize: maxMessageSize,
	}
	first := encoding.ReceiverSettleModeFirst
	reply.ReceiverSettleMode = &first // we settle first (and confirm the peer's second)
	if l.role == encoding.RoleReceiver {
		if a.Target != nil {
			l.address = a.Target.Address
		}
	} else if a.Source != nil {
		l.address = a.Source.Address
	}
	n, credit, aerr := s.c.resolve(l)
	if aerr != nil {
		// §2.6.3: refuse with an attach without the node, then a closing detach.
		if l.role == encoding.RoleReceiver {
			reply.Target = nil
		} else {
			reply.Source = nil
		}
		s.send(reply)
		s.send(&frames.PerformDetach{Handle: lh, Closed: true, Error: aerr})
		l.detached = true
		return nil
	}
	l.node = n
	s.send(reply)
	if l.role == encoding.RoleReceiver && credit > 0 {
		l.credit = credit
		s.sendFlow(l)
	}
	return nil
}

// normalizeAddress strips the scheme and host some clients put before a node's path
// (uamqp: amqps://host/messages/devicebound).
func normalizeAddress(a string) string {
	for _, p := range []string{"amqps://", "amqp://"} {
		if rest, ok := strings.CutPrefix(a, p); ok {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				return rest[i:]
			}
			return "/"
		}
	}
	return a
}

// flow applies the peer's link state (where we send: its credit).
func (l *link) flow(f *frames.PerformFlow) {
	if l.detached {
		return
	}
	if l.role == encoding.RoleReceiver {
		if f.Echo {
			l.s.sendFlow(l)
		}
		return
	}
	if f.LinkCredit != nil {
		dc := uint32(0)
		if f.DeliveryCount != nil {
			dc = *f.DeliveryCount
		}
		l.credit = dc + *f.LinkCredit - l.deliveryCount // §2.6.7
	}
	l.draining = f.Drain
	l.node.credit(l)
	if !l.pump() && f.Echo {
		l.s.sendFlow(l)
	}
}

// finishDrain ends a drain the peer asked for once the hub has sent what it can (§2.6.7): the
// credit left is used up and the flow state is sent, also when the deliveries themselves used the
// credit up — the peer's drain waits for that flow. While the peer's session window holds queued
// deliveries back, the drain waits for pump. It reports whether a flow was sent.
func (l *link) finishDrain() bool {
	if !l.draining || l.detached || (len(l.queue) > 0 && l.credit > 0) {
		return false
	}
	l.draining = false
	l.deliveryCount += l.credit
	l.credit = 0
	l.s.sendFlow(l)
	return true
}

// offer queues a delivery; it goes out when credit and the session window allow.
func (l *link) offer(d *outDelivery) {
	d.link = l
	l.queue = append(l.queue, d)
	l.pump()
}

// pump sends queued deliveries while credit and the peer's window allow, then ends a drain that
// is due. It reports whether it sent the link's flow state (a drain ended).
func (l *link) pump() bool {
	l.sendQueued()
	return l.finishDrain()
}

// sendQueued sends queued deliveries while credit and the peer's window allow, each in as many
// transfers as the peer's max-frame-size requires.
func (l *link) sendQueued() {
	s := l.s
	for len(l.queue) > 0 && l.credit > 0 && !l.detached {
		d := l.queue[0]
		chunk := int(min(s.c.peerMax, 1<<20)) - 128 // room for the transfer performative
		frameCount := max(1, (len(d.payload)+chunk-1)/chunk)
		if s.remoteIncomingWindow < uint32(frameCount) {
			return
		}
		l.queue = l.queue[1:]
		id := s.nextDeliveryID
		s.nextDeliveryID++
		format := uint32(0)
		rest := d.payload
		for i := 0; i < frameCount; i++ {
			part := rest[:min(chunk, len(rest))]
			rest = rest[len(part):]
			t := &frames.PerformTransfer{Handle: l.localHandle, Payload: part, More: len(rest) > 0}
			if i == 0 {
				t.DeliveryID, t.DeliveryTag, t.MessageFormat, t.Settled = &id, d.tag, &format, d.settled
			}
			s.send(t)
			s.nextOutgoingID++
			s.remoteIncomingWindow--
		}
		l.deliveryCount++
		l.credit--
		if !d.settled {
			s.unsettled[id] = d
		}
	}
}

// transfer assembles the peer's deliveries where we receive.
func (l *link) transfer(t *frames.PerformTransfer) {
	if l.detached {
		return
	}
	if l.role != encoding.RoleReceiver {
		l.detach(amqpError(condNotAllowed, "transfer on a link where c2d-hub sends"))
		return
	}
	if l.in == nil {
		if t.DeliveryID == nil {
			l.detach(amqpError(condInvalidField, "first transfer of a delivery without delivery-id"))
			return
		}
		if l.credit == 0 {
			l.detach(amqpError(condTransferLimit, "transfer without link credit"))
			return
		}
		if len(t.DeliveryTag) > maxDeliveryTag {
			l.detach(amqpError(condInvalidField, "delivery-tag of %d bytes (at most %d)", len(t.DeliveryTag), maxDeliveryTag))
			return
		}
		l.credit--
		l.deliveryCount++
		l.in = &inDelivery{id: *t.DeliveryID, tag: t.DeliveryTag, settled: t.Settled}
	}
	d := l.in
	if t.Aborted {
		l.in = nil
		return
	}
	if t.Settled {
		d.settled = true
	}
	if len(d.payload)+len(t.Payload) > maxMessageSize {
		l.in = nil
		l.detach(amqpError(condMessageSize, "message exceeds %d bytes", maxMessageSize))
		return
	}
	d.payload = append(d.payload, t.Payload...)
	if t.More {
		return
	}
	l.in = nil
	l.node.message(l, d)
}

// settleIn settles a delivery the peer sent us with our outcome.
func (l *link) settleIn(d *inDelivery, state encoding.DeliveryState) {
	if d.settled || l.detached {
		return
	}
	l.s.send(&frames.PerformDisposition{Role: encoding.RoleReceiver, First: d.id, Settled: true, State: state})
}

// giveCredit tops the peer's credit back up to n (where we receive).
func (l *link) giveCredit(n uint32) {
	if l.detached || l.credit >= n/2 {
		return
	}
	l.credit = n
	l.s.sendFlow(l)
}

// detach ends the link from our side with an error (nil: a clean close).
func (l *link) detach(e *encoding.Error) {
	if l.detached {
		return
	}
	l.s.send(&frames.PerformDetach{Handle: l.localHandle, Closed: true, Error: e})
	l.gone()
}

// peerDetached answers the peer's detach and forgets the link.
func (l *link) peerDetached(d *frames.PerformDetach) {
	if !l.detached {
		l.s.send(&frames.PerformDetach{Handle: l.localHandle, Closed: d.Closed})
	}
	l.gone()
	delete(l.s.links, l.remoteHandle)
	delete(l.s.handles, l.localHandle)
}

// gone marks the link ended and tells its node once; the peer's handle stays mapped until its
// detach arrives.
func (l *link) gone() {
	if l.node != nil && !l.told {
		l.told = true
		l.node.detached(l)
	}
	l.detached = true
	l.queue = nil
	for id, d := range l.s.unsettled {
		if d.link == l {
			delete(l.s.unsettled, id)
		}
	}
}
