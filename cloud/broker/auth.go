package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// MaxKeepAlive is Azure's keep-alive cap in seconds.
const MaxKeepAlive = 1767

// authInfo is what a successful CONNECT established about a client.
type authInfo struct {
	hub.AuthResult
	expiry time.Time       // the SAS token's se: Azure drops the connection then
	req    hub.AuthRequest // the CONNECT's credentials, checked again when keys change
	gen    uint64          // Broker.credGen before Authenticate ran
}

// authHook authenticates CONNECTs against the core and enforces per-device topic isolation.
type authHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *authHook) ID() string { return "c2d-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// CONNACK return codes (MQTT 3.1.1 §3.2.2.3) and their MQTT 5 counterparts.
var (
	refuseBadCredentials = connackCode{v3: 0x04, v5: packets.ErrBadUsernameOrPassword}
	refuseNotAuthorized  = connackCode{v3: 0x05, v5: packets.ErrNotAuthorized}
	refuseUnavailable    = connackCode{v3: 0x03, v5: packets.ErrServerUnavailable}
	refuseProtocol       = connackCode{v3: 0x01, v5: packets.ErrUnsupportedProtocolVersion}
)

type connackCode struct {
	v3 byte
	v5 packets.Code
}

// OnConnectAuthenticate checks client id, username and SAS token with the core. A refusal is
// answered here with the precise CONNACK code (mochi would send "bad username or password" mapped
// to 3.1.1's 0x05 for everything) and the socket is closed, so mochi's own CONNACK goes nowhere.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.b
	b.sweepAuthed()
	clientID := cl.ID
	// Before authentication anyone may send CONNECTs: their log lines share one rate limit.
	log := b.unauthLog.With("client", clientID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)

	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		h.refuse(cl, refuseUnavailable, log, ErrClosed)
		return false
	}

	if cl.Properties.ProtocolVersion != 4 {
		// MQTT 3.1.1 only, like Azure (docs/protocol.md §1); mochi already refuses 3.1.
		h.refuse(cl, refuseProtocol, log, fmt.Errorf("MQTT protocol version %d: only 3.1.1 (4) is supported", cl.Properties.ProtocolVersion))
		return false
	}

	// Read before Authenticate: a key change from here on may have been checked against the old
	// key and missed by the re-check of live sessions; establish re-checks then (reverify.go).
	gen := b.credGen.Load()
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.AuthTimeout)
	defer cancel()
	req := hub.AuthRequest{ClientID: clientID, Username: string(pk.Connect.Username), Password: string(pk.Connect.Password)}
	var res hub.AuthResult
	var err error
	select {
	case b.auths <- struct{}{}:
		res, err = b.core.Authenticate(ctx, req)
		<-b.auths
	case <-ctx.Done():
		err = fmt.Errorf("waiting to authenticate: %w", ctx.Err())
	}
	if err != nil {
		switch {
		case errors.Is(err, hub.ErrDeviceDisabled):
			// Only a valid token learns that its device is disabled (the core checks the token
			// first).
			h.refuse(cl, refuseNotAuthorized, log, err)
		case errors.Is(err, hub.ErrDeviceNotFound):
			// The same answer as a wrong key: a stranger cannot tell registered device ids
			// from others (issue #17).
			h.refuse(cl, refuseBadCredentials, log, err)
		case errors.Is(err, hub.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			h.refuse(cl, refuseUnavailable, log, err)
		case errors.Is(err, hub.ErrUnauthorized), errors.Is(err, iothub.ErrTokenMalformed),
			errors.Is(err, iothub.ErrTokenExpired), errors.Is(err, iothub.ErrTokenResource),
			errors.Is(err, iothub.ErrTokenSignature), errors.Is(err, iothub.ErrTopic),
			errors.Is(err, hub.ErrInvalidArgument), errors.Is(err, iothub.ErrInvalid):
			h.refuse(cl, refuseBadCredentials, log, err)
		default:
			log.Error("authenticate failed", "error", err)
			h.refuse(cl, refuseUnavailable, log, err)
		}
		return false
	}
	if res.DeviceID == "" {
		h.refuse(cl, refuseUnavailable, log, errors.New("core accepted a CONNECT without naming the device"))
		return false
	}

	info := authInfo{AuthResult: res, expiry: res.TokenExpiry, req: req, gen: gen}
	if info.expiry.IsZero() {
		// The core verified the token; Azure drops a connection when its token expires.
		if tok, err := iothub.ParseSASToken(string(pk.Connect.Password)); err == nil {
			info.expiry = tok.Expiry
		}
	}
	// A will message would be published by the broker on the device's behalf, to any topic and
	// past the ACL (mochi checks neither): c2d does not route device publishes, so it is dropped.
	if cl.Properties.Will.Flag != 0 {
		log.Info("ignoring the will message of a device", "will_topic", cl.Properties.Will.TopicName)
		cl.Properties.Will = mqtt.Will{}
	}
	// Azure caps keep-alive at 1767 s (and applies that cap to a client that asks for none):
	// mochi drops a client silent for 1.5 × this.
	if ka := cl.State.Keepalive; ka == 0 || ka > MaxKeepAlive {
		cl.State.Keepalive = MaxKeepAlive
	}
	b.mu.Lock()
	b.authed[cl] = info
	b.mu.Unlock()
	log.Debug("device authenticated", "device", res.DeviceID, "module", res.ModuleID, "extension", res.Extension)
	return true
}

func (h *authHook) refuse(cl *mqtt.Client, code connackCode, log *slog.Logger, reason error) {
	// The reason comes from the core and names what failed, never the token itself.
	log.Info("connection refused", "reason", reason.Error(), "connack", fmt.Sprintf("0x%02x", connackByte(cl, code)))
	if f := h.b.opts.Events.AuthFailed; f != nil && code != refuseUnavailable {
		f(cl.ID, reason)
	}
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connack},
		ReasonCode:  connackByte(cl, code),
	}
	if cl.Properties.ProtocolVersion >= 5 {
		ack.Properties.ReasonString = code.v5.Reason
	}
	_ = cl.WritePacket(ack)
	cl.Stop(code.v5)
}

func connackByte(cl *mqtt.Client, code connackCode) byte {
	if cl.Properties.ProtocolVersion >= 5 {
		return code.v5.Code
	}
	return code.v3
}

// sweepAuthed forgets authentications whose session never got established (the CONNACK write
// failed): they would otherwise stay in the map.
func (b *Broker) sweepAuthed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for cl := range b.authed {
		if cl.Closed() {
			delete(b.authed, cl)
		}
	}
}

// OnACLCheck is device isolation. For a subscribe (write=false) topic is the filter; for a
// publish it is the topic name. mochi also asks with write=false and a concrete topic before
// routing a publish to a client: refused, since nothing is ever routed to devices.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	c := h.b.connOf(cl)
	if c == nil {
		return false
	}
	if write {
		return c.mayPublish(topic)
	}
	if !c.maySubscribe(topic) {
		// The device sees only SUBACK 0x80, which some clients (mqtt.js) treat as success: say why.
		h.b.log.Info("subscription refused: a device may subscribe only to its own device-bound topic "+
			"(its id percent-encoded as in docs/protocol.md §3.1)", "device", c.deviceID, "filter", topic)
		return false
	}
	return true
}

// Filters official SDKs subscribe to on every connection (direct methods, twin). c2d implements
// neither: the subscriptions are granted so the SDKs connect, and nothing is ever published there.
var noopFilters = []string{
	"$iothub/methods/POST/#",
	"$iothub/twin/res/#",
	"$iothub/twin/PATCH/properties/desired/#",
}

// maySubscribe allows a device its own device-bound filter (in any escaping of its id) and the
// no-op SDK filters; modules get no cloud-to-device messages (as on Azure).
func (c *conn) maySubscribe(filter string) bool {
	for _, f := range noopFilters {
		if filter == f {
			return true
		}
	}
	if c.moduleID != "" {
		return false
	}
	if isDeviceBoundFilter(filter, c.deviceID) {
		return true
	}
	// The extension's own filter (docs/protocol.md §3.1): allowed, nothing is published there.
	rest, ok := strings.CutPrefix(filter, iothub.DispositionPrefix)
	if !ok {
		return false
	}
	level, rest, ok := strings.Cut(rest, "/")
	return ok && rest == "messages/devicebound/#" && topicIDIs(level, c.deviceID)
}

// isDeviceBoundFilter reports whether filter is `devices/{id}/messages/devicebound/#` for exactly
// this device id (the id level may be percent-encoded, as the Python SDK does).
func isDeviceBoundFilter(filter, deviceID string) bool {
	rest, ok := strings.CutPrefix(filter, "devices/")
	if !ok {
		return false
	}
	level, rest, ok := strings.Cut(rest, "/")
	if !ok || rest != "messages/devicebound/#" {
		return false
	}
	return topicIDIs(level, deviceID)
}

// topicIDIs reports whether a topic level names exactly this id, raw or percent-encoded. A level
// holding '+' or '#' is a wildcard (or invalid) whatever the id: in a filter it would match other
// devices' topics, and a device whose id has them uses the encoded level (docs/protocol.md §3.1).
// A level with '%' is decoded, never taken raw: `a%41` is device "aA", not device "a%41".
func topicIDIs(level, id string) bool {
	if strings.ContainsAny(level, "+#") {
		return false
	}
	if level == id && !strings.Contains(level, "%") {
		return true
	}
	dec, err := iothub.PercentDecode(level)
	return err == nil && dec == id
}

// mayPublish allows a device its own D2C events topic and, for connections that opted into the
// extension, its own disposition topics; a module its own module events topic.
func (c *conn) mayPublish(topic string) bool {
	if c.moduleID != "" {
		rest, ok := strings.CutPrefix(topic, "devices/")
		if !ok {
			return false
		}
		parts := strings.SplitN(rest, "/", 5) // id, "modules", mid, "messages", "events[/bag]"
		return len(parts) == 5 && topicIDIs(parts[0], c.deviceID) && parts[1] == "modules" &&
			topicIDIs(parts[2], c.moduleID) && parts[3] == "messages" &&
			(parts[4] == "events" || strings.HasPrefix(parts[4], "events/"))
	}
	if strings.HasPrefix(topic, "$iothub/twin/") || strings.HasPrefix(topic, "$iothub/methods/res/") {
		return true // twin requests and method responses of the SDKs: accepted and dropped
	}
	if rest, ok := strings.CutPrefix(topic, iothub.DispositionPrefix); ok {
		// Only the id is checked here: a malformed remainder is logged and dropped by the
		// delivery hook instead of costing the device its connection.
		level, rest, ok := strings.Cut(rest, "/")
		return c.ext && ok && topicIDIs(level, c.deviceID) && strings.HasPrefix(rest, "messages/devicebound/")
	}
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return false
	}
	level, rest, ok := strings.Cut(rest, "/")
	return ok && topicIDIs(level, c.deviceID) && (rest == "messages/events" || strings.HasPrefix(rest, "messages/events/"))
}
