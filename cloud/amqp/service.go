package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Node addresses (Azure IoT Hub's).
const (
	addrCBS         = "$cbs"
	addrDeviceBound = "/messages/devicebound"
	addrFeedback    = "/messages/serviceBound/feedback"
)

// sendCredit is how many sends a service may have in flight on one link: they commit together
// (the store group-commits), so a pipelining sender gets one fsync per batch.
const sendCredit = 256

// resolve finds the node a link attaches to and checks the connection's rights for it; mu is held.
// credit is what a link where we receive starts with.
func (c *conn) resolve(l *link) (node, uint32, *encoding.Error) {
	addr := normalizeAddress(l.address)
	now := c.srv.now()
	host := c.srv.opt.HostName
	receiving := l.role == encoding.RoleReceiver
	switch {
	case addr == addrCBS && receiving:
		return cbsRequests{}, cbsCredit, nil
	case addr == addrCBS:
		c.cbsOut = l
		return cbsReplies{}, 0, nil
	case strings.EqualFold(addr, addrDeviceBound) && receiving:
		if l.grant = c.auth.service(host, now); l.grant == nil {
			return nil, 0, c.needService(addr)
		}
		return &deviceBoundSender{}, sendCredit, nil
	case strings.EqualFold(addr, addrFeedback) && !receiving:
		if l.grant = c.auth.service(host, now); l.grant == nil {
			return nil, 0, c.needService(addr)
		}
		ctx, cancel := context.WithCancel(context.Background())
		return &feedbackSource{ctx: ctx, cancel: cancel, locked: map[string]bool{}}, 0, nil
	case strings.HasPrefix(addr, "/devices/") && !receiving:
		id, err := parseDeviceBoundTo(addr)
		if err != nil {
			return nil, 0, amqpError(condNotFound, "no node %q: a device receives from /devices/{deviceId}/messages/devicebound", l.address)
		}
		if l.grant = c.auth.device(host, id, now); l.grant == nil {
			return nil, 0, amqpError(condUnauthorized,
				"receiving for device %q needs a put-token on $cbs for %s/devices/%s (its key) or a policy with DeviceConnect", id, host, id)
		}
		d := &deviceLink{conn: c, id: id, link: l}
		c.after(func() { c.srv.opt.Hub.Attach(d) })
		return d, 0, nil
	}
	return nil, 0, amqpError(condNotFound, "no node %q (%s): c2d-hub has $cbs, %s, %s and /devices/{id}/messages/devicebound",
		l.address, map[bool]string{true: "as target", false: "as source"}[receiving], addrDeviceBound, addrFeedback)
}

func (c *conn) needService(addr string) *encoding.Error {
	return amqpError(condUnauthorized,
		"%s needs ServiceConnect: put a token of the 'service' or 'iothubowner' policy on $cbs first (or use SASL PLAIN)", addr)
}

// deviceBoundSender is /messages/devicebound: a service sends C2D messages. Each is accepted once
// durable, or rejected with the condition Azure's SDKs translate into their typed errors.
type deviceBoundSender struct{ nodeBase }

func (deviceBoundSender) message(l *link, d *inDelivery) {
	c := l.s.c
	g := l.grant
	if !g.expiry.After(c.srv.now()) {
		l.settleIn(d, &encoding.StateRejected{Error: amqpError(condUnauthorized, "the SAS token for %s expired", g.audience)})
		l.giveCredit(sendCredit)
		return
	}
	m, err := decodeMessage(d.payload)
	var id string
	var req iothub.SendRequest
	if err == nil {
		id, req, err = toSendRequest(m, c.srv.now())
	} else {
		err = &errField{condDecode, "message: " + err.Error()}
	}
	if err != nil {
		l.settleIn(d, rejected(err))
		l.giveCredit(sendCredit)
		return
	}
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := c.srv.opt.Hub.Send(ctx, id, req)
		c.locked(func() {
			if err != nil {
				c.log.Debug("amqp: send refused", "device", id, "err", err)
				l.settleIn(d, rejected(err))
			} else {
				l.settleIn(d, &encoding.StateAccepted{})
			}
			l.giveCredit(sendCredit)
		})
	}()
}

// rejected maps a refusal to Azure's AMQP condition: amqp:not-found for an unknown device,
// amqp:resource-limit-exceeded for a full queue, amqp:link:message-size-exceeded for a message
// over 64 KB. The description keeps the hub's reason; info carries Azure's numeric error code.
func rejected(err error) *encoding.StateRejected {
	var fe *errField
	if errors.As(err, &fe) {
		return &encoding.StateRejected{Error: &encoding.Error{Condition: fe.cond, Description: fe.msg}}
	}
	cond := condInternal
	var ie *iothub.Error
	switch {
	case errors.As(err, &ie) && ie.Code == iothub.CodeMessageTooLarge:
		cond = condMessageSize
	case errors.Is(err, hub.ErrDeviceNotFound):
		cond = condNotFound
	case errors.Is(err, hub.ErrQueueFull):
		cond = condResourceLimit
	case errors.Is(err, hub.ErrInvalidArgument):
		cond = condArgument
	case errors.Is(err, hub.ErrUnauthorized):
		cond = condUnauthorized
	case errors.Is(err, hub.ErrLockLost):
		cond = condLockLost
	}
	e := &encoding.Error{Condition: cond, Description: err.Error()}
	if ie != nil {
		e.Info = map[string]any{"iothub-errorcode": ie.Code.Name(), "iothub-status": int32(ie.Code)}
	}
	return &encoding.StateRejected{Error: e}
}

// feedbackSource is /messages/serviceBound/feedback: one delivery per feedback batch, its tag the
// batch's lock token. The first outcome the service gives is final: accepted (or rejected)
// completes the batch, released or modified abandons it; batches unsettled when the link ends are
// abandoned (the hub offers them again).
type feedbackSource struct {
	nodeBase
	ctx      context.Context
	cancel   context.CancelFunc
	fetching bool
	locked   map[string]bool // lock tokens delivered and not settled
}

func (f *feedbackSource) credit(l *link) {
	if f.fetching || l.detached || l.credit <= uint32(len(l.queue)) {
		return
	}
	f.fetching = true
	c := l.s.c
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		b, err := c.srv.opt.Hub.ReceiveFeedback(f.ctx)
		c.locked(func() {
			f.fetching = false
			if err != nil {
				if f.ctx.Err() == nil && !errors.Is(err, hub.ErrClosed) {
					c.log.Warn("amqp: receive feedback", "err", err)
					l.detach(amqpError(condInternal, "reading feedback: %v", err))
				}
				return
			}
			if l.detached {
				go f.settle(c, b.LockToken, false)
				return
			}
			payload, err := feedbackMessage(c.srv.opt.HostName, b)
			if err != nil {
				c.log.Error("amqp: encode feedback", "err", err)
				go f.settle(c, b.LockToken, false)
				return
			}
			f.locked[b.LockToken] = true
			l.offer(&outDelivery{tag: []byte(b.LockToken), payload: payload, ref: b.LockToken,
				settled: l.sndSettle == encoding.SenderSettleModeSettled})
			if l.sndSettle == encoding.SenderSettleModeSettled {
				// At most once: the batch counts as received.
				delete(f.locked, b.LockToken)
				go f.settle(c, b.LockToken, true)
			}
			f.credit(l)
		})
	}()
}

func (f *feedbackSource) settled(l *link, d *outDelivery, state encoding.DeliveryState) {
	if !f.locked[d.ref] {
		return
	}
	delete(f.locked, d.ref)
	complete := false
	switch state.(type) {
	case *encoding.StateAccepted, *encoding.StateRejected:
		complete = true
	}
	go f.settle(l.s.c, d.ref, complete)
}

func (f *feedbackSource) detached(l *link) {
	f.cancel()
	for tok := range f.locked {
		go f.settle(l.s.c, tok, false)
	}
	f.locked = map[string]bool{}
}

func (f *feedbackSource) settle(c *conn, token string, complete bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if complete {
		err = c.srv.opt.Hub.CompleteFeedback(ctx, token)
	} else {
		err = c.srv.opt.Hub.AbandonFeedback(ctx, token)
	}
	if err != nil && !errors.Is(err, hub.ErrClosed) {
		c.log.Info("amqp: settle feedback batch", "complete", complete, "err", err)
	}
}

// feedbackMessage is a batch as Azure sends it: content type
// application/vnd.microsoft.iothub.feedback.json, user-id the hub's name, body a data section with
// the JSON array of records.
func feedbackMessage(host string, b *iothub.FeedbackBatch) ([]byte, error) {
	body, err := json.Marshal(b.Records)
	if err != nil {
		return nil, err
	}
	name, _, _ := strings.Cut(host, ".")
	ct := iothub.FeedbackContentType
	enq := b.EnqueuedTimeUTC
	m := &frames.Message{
		Properties: &frames.MessageProperties{
			MessageID:    b.LockToken,
			UserID:       []byte(name),
			ContentType:  &ct,
			CreationTime: &enq,
		},
		Annotations: encoding.Annotations{encoding.Symbol("iothub-enqueuedtime"): enq},
		Data:        [][]byte{body},
	}
	return encodeMessage(m)
}
