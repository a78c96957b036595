package broker

import (
	"context"
	"errors"
	"strings"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// qosHook closes the connection of a device that publishes with QoS 2, as Azure does. (QoS 2
// subscriptions are granted QoS 1 through the server's MaximumQos capability.)
type qosHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *qosHook) ID() string { return "c2d-qos" }

func (h *qosHook) Provides(b byte) bool { return b == mqtt.OnPacketRead }

func (h *qosHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 1 {
		h.b.log.Info("closing connection: QoS 2 PUBLISH (only QoS 0 and 1 are supported)",
			"client", cl.ID, "remote", cl.Net.Remote, "topic", pk.TopicName)
		return pk, packets.ErrRejectPacket // ends the read loop: mochi closes the connection
	}
	return pk, nil
}

// sessionHook maps mochi's session lifecycle onto the core's Attach/Detach.
type sessionHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *sessionHook) ID() string { return "c2d-session" }

func (h *sessionHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnSubscribed, mqtt.OnPacketSent, mqtt.OnUnsubscribed, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnSessionEstablished runs after the CONNACK, before mochi reads the client's next packet. A
// resumed persistent session (CleanSession=0) already holds the device-bound subscription it
// inherited from the previous connection; clients such as paho do not subscribe again, so the
// session is attached right here.
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	b := h.b
	b.mu.Lock()
	info, ok := b.authed[cl]
	delete(b.authed, cl)
	b.mu.Unlock()
	if !ok {
		b.log.Error("session without authentication; closing it", "client", cl.ID)
		cl.Stop(packets.ErrNotAuthorized)
		return
	}
	c := b.establish(cl, info)
	c.log.Info("device connected", "listener", cl.Net.Listener, "extension", c.ext,
		"clean_session", cl.Properties.Clean, "protocol", cl.Properties.ProtocolVersion)
	if f := b.opts.Events.Connected; f != nil {
		f(c.deviceID, c.moduleID)
	}
	if c.moduleID != "" {
		return
	}
	for filter, sub := range cl.State.Subscriptions.GetAll() {
		if isDeviceBoundFilter(filter, c.deviceID) {
			b.attach(c, min(sub.Qos, 1))
			break
		}
	}
}

// OnSubscribed notes a granted device-bound subscription; the session is attached once its
// SUBACK is on the wire (OnPacketSent), so no message overtakes the SUBACK.
func (h *sessionHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= 2 && isDeviceBoundFilter(f.Filter, c.deviceID) {
			c.mu.Lock()
			c.attachOn, c.attachQoS, c.attachSet = pk.PacketID, codes[i], true
			c.mu.Unlock()
			return
		}
	}
}

func (h *sessionHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	c := h.b.connOf(cl)
	if c == nil {
		return
	}
	c.mu.Lock()
	due, qos := c.attachSet && c.attachOn == pk.PacketID, c.attachQoS
	if due {
		c.attachSet = false
	}
	c.mu.Unlock()
	if due {
		h.b.attach(c, qos)
	}
}

// OnUnsubscribed detaches a device that drops its device-bound subscription: its in-flight
// messages go back to Enqueued in the core.
func (h *sessionHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	c := h.b.connOf(cl)
	if c == nil {
		return
	}
	for _, f := range pk.Filters {
		if isDeviceBoundFilter(f.Filter, c.deviceID) {
			c.log.Info("device unsubscribed; no more deliveries on this connection")
			h.b.detach(c)
			return
		}
	}
}

// OnDisconnect ends the session: the core detaches it (its in-flight messages go back to
// Enqueued), and mochi's inflight store of the client is cleared so that a resumed persistent
// session never resends a stale PUBLISH (the core redelivers from its durable store instead).
func (h *sessionHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if c := h.b.connOf(cl); c != nil {
		h.b.endSession(c, err)
	}
	cl.ClearInflights()
}

// deliveryHook turns PUBACKs and disposition publishes into Settle calls, and accepts and drops
// every device publish (c2d-hub does not route telemetry).
type deliveryHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *deliveryHook) ID() string { return "c2d-delivery" }

func (h *deliveryHook) Provides(b byte) bool {
	return b == mqtt.OnPacketRead || b == mqtt.OnPublish
}

// OnPacketRead sees every PUBACK before mochi does. PUBACKs are matched against the broker's own
// packet-id table, in any order. For a standard connection a PUBACK completes the message (Azure's
// rule); for an extension connection it only acknowledges receipt and the explicit disposition
// settles. Settle runs synchronously on the client's read goroutine: it is one durable commit, and
// it keeps a device's settlements in the order the device sent them.
func (h *deliveryHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Puback {
		return pk, nil
	}
	c := h.b.connOf(cl)
	if c == nil {
		return pk, nil
	}
	lt, ok := c.acked(pk.PacketID)
	if ok && !c.ext {
		h.b.settle(c, lt, iothub.DispositionComplete, "")
	}
	return pk, nil
}

// OnPublish handles what a device publishes (the ACL has already limited it to its own topics).
// It always returns CodeSuccessIgnore: mochi still PUBACKs a QoS 1 publish, but routes and
// retains nothing. A disposition is settled before its PUBACK is sent, so a device that gets the
// PUBACK knows the hub has recorded it (or logged why not).
func (h *deliveryHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	c := h.b.connOf(cl)
	if c == nil {
		return pk, packets.CodeSuccessIgnore
	}
	switch {
	case strings.HasPrefix(pk.TopicName, iothub.DispositionPrefix):
		h.disposition(c, pk)
	case strings.HasPrefix(pk.TopicName, "$iothub/"):
		c.log.Debug("device twins and direct methods are not implemented; publish dropped", "topic", pk.TopicName)
	default:
		h.event(c, pk)
	}
	return pk, packets.CodeSuccessIgnore
}

func (h *deliveryHook) disposition(c *conn, pk packets.Packet) {
	dev, lt, d, err := iothub.ParseDispositionTopic(pk.TopicName)
	if err != nil {
		c.log.Warn("dropping malformed disposition", "error", err)
		return
	}
	if dev != c.deviceID { // the ACL allows only the device's own id; belt and braces
		c.log.Warn("dropping disposition for another device", "topic_device", dev)
		return
	}
	body, err := iothub.ParseDispositionBody(pk.Payload)
	if err != nil {
		c.log.Warn("dropping disposition with a malformed body", "lock_token", lt, "disposition", string(d), "error", err)
		return
	}
	c.forget(lt)
	h.b.settle(c, lt, d, body.Reason)
}

func (h *deliveryHook) event(c *conn, pk packets.Packet) {
	if c.moduleID != "" {
		c.log.Debug("module event accepted and dropped (c2d-hub does not route telemetry)", "topic", pk.TopicName)
		return
	}
	_, bag, err := iothub.ParseEventsTopic(pk.TopicName)
	if err != nil {
		c.log.Debug("event with a malformed topic accepted and dropped", "error", err)
		return
	}
	if f := h.b.opts.Events.DeviceEvent; f != nil {
		f(c.deviceID, bag, pk.Payload)
	}
	report, isReport, err := iothub.ParseRejectReport(bag, pk.Payload)
	switch {
	case isReport && err != nil:
		c.log.Warn("malformed reject report from device", "error", err)
	case isReport && !c.ext:
		// A device in Azure's dialect reports a refusal before the PUBACK that would complete the
		// message (docs/protocol.md §7): c2d-hub records the truth, Rejected with the reason.
		if lt, ok := c.reported(report.OriginalMessageID); ok {
			c.log.Info("device reports it refused a message before acknowledging it: rejected",
				"original_message_id", report.OriginalMessageID, "reason", report.Reason)
			h.b.settle(c, lt, iothub.DispositionReject, iothub.TruncateReason(report.Reason))
			return
		}
		c.log.Info("device reports it refused a message it had already acknowledged (completed by PUBACK)",
			"original_message_id", report.OriginalMessageID, "reason", report.Reason)
	case isReport:
		c.log.Info("reject report from a device using the disposition extension ignored (its disposition settles)",
			"original_message_id", report.OriginalMessageID, "reason", report.Reason)
	default:
		c.log.Debug("event accepted and dropped (c2d-hub does not route telemetry)", "bytes", len(pk.Payload))
	}
}

// settle passes a device's disposition to the core and logs what the device cannot be told
// (MQTT 3.1.1 has no negative PUBACK).
func (b *Broker) settle(c *conn, lockToken string, d iothub.Disposition, reason string) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.SettleTimeout)
	defer cancel()
	err := b.core.Settle(ctx, c.deviceID, lockToken, d, reason)
	switch {
	case err == nil:
		c.log.Debug("message settled", "disposition", string(d))
	case errors.Is(err, hub.ErrLockLost):
		c.log.Info("disposition ignored: the lock expired or the message was settled already (it will be or was redelivered)",
			"disposition", string(d), "error", err)
	default:
		c.log.Warn("settling a message failed; it stays locked until its lock expires", "disposition", string(d), "error", err)
	}
}
