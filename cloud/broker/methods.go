package broker

import (
	"fmt"
	"strings"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// methodState is a session's direct-method subscription (guarded by conn.mu).
type methodState struct {
	ready bool   // subscribed to iothub.MethodsFilter, SUBACK written
	on    uint16 // ready once the SUBACK with this packet id is written
	due   bool
	// held are requests made after the subscription was granted and before its SUBACK was
	// written: the device has subscribed as far as its caller can tell (a service that saw the
	// SUBACK's effect may call at once), so they are written right after the SUBACK, not refused.
	held []outbound
}

// maxHeldRequests bounds what waits for one SUBACK; calls beyond it are refused as not online.
const maxHeldRequests = 16

// PublishMethod writes a direct-method request to the device's current session (not a module's)
// if it has subscribed to `$iothub/methods/POST/#`; sent is false when it has not. Requests are
// QoS 0, as Azure sends them, and never kept for a session that is not there.
func (b *Broker) PublishMethod(deviceID, topic string, body []byte) (sent bool, err error) {
	b.mu.RLock()
	c := b.devices[deviceID]
	b.mu.RUnlock()
	if c == nil {
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.cl.Closed() {
		return false, nil
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 0},
		TopicName:   topic,
		Payload:     body,
		Created:     time.Now().Unix(),
	}
	if !c.meth.ready {
		if !c.meth.due || len(c.meth.held) >= maxHeldRequests {
			return false, nil
		}
		c.meth.held = append(c.meth.held, outbound{pk: pk})
		return true, nil
	}
	if !c.enqueue(outbound{pk: pk}) {
		return false, fmt.Errorf("method request to %s: %w", deviceID, errBacklog)
	}
	return true, nil
}

// methodHook tracks direct-method subscriptions and passes devices' answers to Options.Methods. It
// runs before deliveryHook, which would drop the answers.
type methodHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *methodHook) ID() string { return "c2d-methods" }

func (h *methodHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnSubscribed, mqtt.OnPacketSent, mqtt.OnUnsubscribed, mqtt.OnPublish:
		return true
	}
	return false
}

// OnSessionEstablished: a resumed persistent session keeps its methods subscription (the Node SDK
// subscribes again, others do not), so it can take requests at once.
func (h *methodHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return
	}
	if _, ok := cl.State.Subscriptions.Get(iothub.MethodsFilter); ok {
		h.ready(c)
	}
}

func (h *methodHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= 2 && f.Filter == iothub.MethodsFilter {
			c.mu.Lock()
			c.meth.on, c.meth.due = pk.PacketID, true
			c.mu.Unlock()
			return
		}
	}
}

// OnPacketSent: no request overtakes the SUBACK that granted the subscription.
func (h *methodHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	c := h.b.connOf(cl)
	if c == nil {
		return
	}
	c.mu.Lock()
	due := c.meth.due && c.meth.on == pk.PacketID
	if due {
		c.meth.due = false
	}
	c.mu.Unlock()
	if due {
		h.ready(c)
	}
}

func (h *methodHook) ready(c *conn) {
	c.mu.Lock()
	c.meth.ready = true
	// Under c.mu, so no request made from now on overtakes the held ones.
	for _, ob := range c.meth.held {
		if !c.enqueue(ob) {
			c.log.Warn("direct-method request dropped: write queue full", "topic", ob.pk.TopicName)
		}
	}
	c.meth.held = nil
	c.mu.Unlock()
	if m := h.b.opts.Methods; m != nil {
		m.MethodsReady(c.deviceID)
	}
}

func (h *methodHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	c := h.b.connOf(cl)
	if c == nil {
		return
	}
	for _, f := range pk.Filters {
		if f.Filter == iothub.MethodsFilter {
			c.mu.Lock()
			c.meth = methodState{}
			c.mu.Unlock()
		}
	}
}

// OnPublish takes a device's method answers (the ACL allows a device only its own, and a $rid is
// matched against the calls made to that device); everything else passes on to deliveryHook.
func (h *methodHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !strings.HasPrefix(pk.TopicName, iothub.MethodsResponsePref) {
		return pk, nil
	}
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return pk, packets.CodeSuccessIgnore
	}
	status, rid, err := iothub.ParseMethodResponseTopic(pk.TopicName)
	if err != nil {
		c.log.Warn("dropping malformed direct-method answer", "error", err)
		return pk, packets.CodeSuccessIgnore
	}
	if m := h.b.opts.Methods; m != nil {
		m.MethodResponse(c.deviceID, rid, status, pk.Payload)
	}
	return pk, packets.CodeSuccessIgnore
}
