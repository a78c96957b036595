package amqp

import (
	"context"
	"errors"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// deviceLink is a device's receive link on /devices/{id}/messages/devicebound (Azure's AMQP device
// transport). It is the device's hub.Conn: the hub delivers into it, and the device's dispositions
// are native AMQP outcomes: accepted completes, rejected rejects (its error description becomes the
// reason in feedback), released and modified abandon. Delivery tags are the lock tokens.
type deviceLink struct {
	nodeBase
	conn *conn
	id   string
	link *link
}

// DeviceID implements hub.Conn.
func (d *deviceLink) DeviceID() string { return d.id }

// Extension implements hub.Conn: AMQP has explicit dispositions natively.
func (d *deviceLink) Extension() bool { return true }

// Deliver implements hub.Conn. It queues the transfer (sent when the device gives credit) and
// never blocks on the network.
func (d *deviceLink) Deliver(m *iothub.Message) error {
	payload, err := encodeMessage(fromHubMessage(m))
	if err != nil {
		return err
	}
	c := d.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.link.detached || c.ending {
		return errors.New("amqp link detached")
	}
	d.link.offer(&outDelivery{tag: []byte(m.LockToken), payload: payload, ref: m.LockToken,
		settled: d.link.sndSettle == encoding.SenderSettleModeSettled})
	if d.link.sndSettle == encoding.SenderSettleModeSettled {
		// At most once, as the device asked: the message counts as completed when sent.
		go d.settle(m.LockToken, iothub.DispositionComplete, "")
	}
	return nil
}

func (d *deviceLink) settled(l *link, od *outDelivery, state encoding.DeliveryState) {
	disp, reason := iothub.DispositionAbandon, ""
	switch s := state.(type) {
	case *encoding.StateAccepted:
		disp = iothub.DispositionComplete
	case *encoding.StateRejected:
		disp = iothub.DispositionReject
		if s.Error != nil {
			reason = s.Error.Description
			if reason == "" {
				reason = string(s.Error.Condition)
			}
		}
	}
	go d.settle(od.ref, disp, reason)
}

func (d *deviceLink) settle(token string, disp iothub.Disposition, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.conn.srv.opt.Hub.Settle(ctx, d.id, token, disp, reason)
	if err != nil && !errors.Is(err, hub.ErrClosed) {
		d.conn.log.Info("amqp: device settle", "device", d.id, "disposition", disp, "err", err)
	}
}

func (d *deviceLink) detached(*link) {
	d.conn.after(func() { d.conn.srv.opt.Hub.Detach(d) })
}
