package broker

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Twin topics (Azure), as the broker needs them.
const (
	twinResponseFilter = "$iothub/twin/res/#"
	twinDesiredFilter  = "$iothub/twin/PATCH/properties/desired/#"
	twinGetPrefix      = "$iothub/twin/GET/"
	twinReportedPrefix = "$iothub/twin/PATCH/properties/reported/"
)

// TwinSink serves devices' twin requests (cloud/twin.Service).
type TwinSink interface {
	// DeviceGet is the body of a GET answer.
	DeviceGet(ctx context.Context, deviceID string) ([]byte, error)
	// DeviceReport merges a reported patch durably and returns the new reported $version.
	DeviceReport(ctx context.Context, deviceID string, patch []byte) (int64, error)
}

// twinState is a session's twin subscriptions (guarded by conn.mu).
type twinState struct {
	desired bool // subscribed to desired changes, SUBACK written
	on      uint16
	due     bool
}

// PublishDesired writes a desired-properties change to the device's current session if it has
// subscribed to `$iothub/twin/PATCH/properties/desired/#`; sent is false when not (Azure keeps no
// notification for a device that is not there: it reads its twin after reconnecting).
func (b *Broker) PublishDesired(deviceID, topic string, body []byte) (sent bool, err error) {
	b.mu.RLock()
	c := b.devices[deviceID]
	b.mu.RUnlock()
	if c == nil {
		return false, nil
	}
	c.mu.Lock()
	ok := c.twin.desired && !c.ended
	c.mu.Unlock()
	if !ok {
		return false, nil
	}
	return c.write(topic, body)
}

// write queues one QoS 0 PUBLISH for the session's writer.
func (c *conn) write(topic string, body []byte) (bool, error) {
	if c.cl.Closed() {
		return false, nil
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 0},
		TopicName:   topic, Payload: body, Created: time.Now().Unix(),
	}
	if !c.enqueue(outbound{pk: pk}) {
		return false, errBacklog
	}
	return true, nil
}

// twinHook serves the twin topics; it runs before deliveryHook, which would drop them.
type twinHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *twinHook) ID() string { return "c2d-twins" }

func (h *twinHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnSubscribed, mqtt.OnPacketSent, mqtt.OnUnsubscribed, mqtt.OnPublish:
		return true
	}
	return false
}

// OnSessionEstablished: a resumed persistent session keeps its twin subscriptions (Azure's Node
// SDK relies on it and does not subscribe again after a reconnect).
func (h *twinHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return
	}
	if _, ok := cl.State.Subscriptions.Get(twinDesiredFilter); ok {
		c.mu.Lock()
		c.twin.desired = true
		c.mu.Unlock()
	}
}

func (h *twinHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= 2 && f.Filter == twinDesiredFilter {
			c.mu.Lock()
			c.twin.on, c.twin.due = pk.PacketID, true
			c.mu.Unlock()
		}
	}
}

func (h *twinHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	if c := h.b.connOf(cl); c != nil {
		c.mu.Lock()
		if c.twin.due && c.twin.on == pk.PacketID {
			c.twin.due, c.twin.desired = false, true
		}
		c.mu.Unlock()
	}
}

func (h *twinHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	c := h.b.connOf(cl)
	if c == nil {
		return
	}
	for _, f := range pk.Filters {
		if f.Filter == twinDesiredFilter {
			c.mu.Lock()
			c.twin = twinState{}
			c.mu.Unlock()
		}
	}
}

// OnPublish answers twin GETs and reported patches on `$iothub/twin/res/{status}/?$rid=`. It runs
// on the device's read goroutine, like a settlement: a device's twin requests are served in the
// order it sent them, and a 204 means the patch is durable.
func (h *twinHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !strings.HasPrefix(pk.TopicName, "$iothub/twin/") {
		return pk, nil
	}
	c := h.b.connOf(cl)
	if c == nil || c.moduleID != "" {
		return pk, packets.CodeSuccessIgnore
	}
	sink := h.b.opts.Twins
	var kind string
	switch {
	case strings.HasPrefix(pk.TopicName, twinGetPrefix):
		kind = "get"
	case strings.HasPrefix(pk.TopicName, twinReportedPrefix):
		kind = "reported"
	default:
		c.log.Info("twin publish to an unknown topic dropped", "topic", pk.TopicName)
		return pk, packets.CodeSuccessIgnore
	}
	rid := twinRID(pk.TopicName)
	if rid == "" {
		c.log.Warn("twin request without $rid dropped (nothing to answer to)", "topic", pk.TopicName)
		return pk, packets.CodeSuccessIgnore
	}
	if sink == nil {
		h.answer(c, rid, 0, twinError(iothub.CodeServiceUnavailable, "this hub serves no device twins"))
		return pk, packets.CodeSuccessIgnore
	}
	ctx, cancel := context.WithTimeout(h.b.ctx, h.b.opts.SettleTimeout)
	defer cancel()
	switch kind {
	case "get":
		body, err := sink.DeviceGet(ctx, c.deviceID)
		if err != nil {
			h.fail(c, rid, err)
			break
		}
		h.answer(c, rid, 0, twinAnswer{status: 200, body: body})
	case "reported":
		ver, err := sink.DeviceReport(ctx, c.deviceID, pk.Payload)
		if err != nil {
			h.fail(c, rid, err)
			break
		}
		h.answer(c, rid, ver, twinAnswer{status: 204})
	}
	return pk, packets.CodeSuccessIgnore
}

type twinAnswer struct {
	status int
	body   []byte
}

// twinError is an error answer with a JSON body naming the code: Azure's Node SDK ignores the status
// in the topic and takes a bodiless error for success.
func twinError(code iothub.ErrorCode, detail string) twinAnswer {
	b, _ := json.Marshal(map[string]any{"errorCode": int(code), "message": detail})
	return twinAnswer{status: code.HTTPStatus(), body: b}
}

func (h *twinHook) fail(c *conn, rid string, err error) {
	var he *iothub.Error
	switch {
	case errors.As(err, &he):
		h.answer(c, rid, 0, twinError(he.Code, he.Detail))
	case errors.Is(err, hub.ErrDeviceNotFound):
		h.answer(c, rid, 0, twinError(iothub.CodeDeviceNotFound, err.Error()))
	default:
		c.log.Warn("twin request failed", "error", err)
		h.answer(c, rid, 0, twinError(iothub.CodeServiceUnavailable, "the hub could not serve the twin request; retry"))
	}
}

func (h *twinHook) answer(c *conn, rid string, version int64, a twinAnswer) {
	topic := "$iothub/twin/res/" + strconv.Itoa(a.status) + "/?$rid=" + url.QueryEscape(rid)
	if version > 0 {
		topic += "&$version=" + strconv.FormatInt(version, 10)
	}
	if a.body == nil {
		a.body = []byte{}
	}
	if _, err := c.write(topic, a.body); err != nil {
		c.log.Warn("twin answer not sent", "rid", rid, "error", err)
	}
}

// twinRID is the $rid of a twin request topic ("" when absent or malformed).
func twinRID(topic string) string {
	_, query, ok := strings.Cut(topic, "?")
	if !ok {
		return ""
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return ""
	}
	return q.Get("$rid")
}
