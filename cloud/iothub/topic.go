package iothub

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// System property keys of the device-bound and events property bags (Azure).
const (
	PropMessageID       = "$.mid"
	PropCorrelationID   = "$.cid"
	PropUserID          = "$.uid"
	PropTo              = "$.to"
	PropExpiry          = "$.exp"
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropAck             = "iothub-ack"
)

// ExpiryFormat is how $.exp is rendered: ISO-8601 UTC with seven fractional digits, the form Azure
// IoT Hub itself sends (e.g. `2020-07-25T14:14:25.1720000Z`). Parsing accepts any RFC 3339 time.
const ExpiryFormat = "2006-01-02T15:04:05.0000000Z"

// ErrTopic is wrapped by every topic and username parse failure.
var ErrTopic = errors.New("malformed topic")

// escapeTopicID escapes the bytes of a device or module id that cannot stand raw in an MQTT topic
// level: '%' (our escape character), '+' and '#' (wildcards). Everything else in Azure's id set is
// kept raw, which is what the C, C# and Node SDKs put in their topics; Python's fully escaped form
// decodes to the same id.
func escapeTopicID(id string) string {
	if !strings.ContainsAny(id, "%+#/") {
		return id
	}
	var sb strings.Builder
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case '%', '+', '#', '/':
			sb.WriteByte('%')
			sb.WriteByte(upperHex[c>>4])
			sb.WriteByte(upperHex[c&15])
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// unescapeTopicID decodes one id topic level and validates the id.
func unescapeTopicID(level string) (string, error) {
	id, err := PercentDecode(level)
	if err != nil {
		return "", fmt.Errorf("device id level %s: %w", quote(level), err)
	}
	if err := ValidateDeviceID(id); err != nil {
		return "", err
	}
	return id, nil
}

// DeviceBoundFilter is the subscription filter `devices/{id}/messages/devicebound/#`.
func DeviceBoundFilter(deviceID string) string {
	return "devices/" + escapeTopicID(deviceID) + "/messages/devicebound/#"
}

// DeviceBoundTo is the $.to value Azure IoT Hub sends: `/devices/{id}/messages/deviceBound`
// (capital B, as captured from real hubs).
func DeviceBoundTo(deviceID string) string {
	return "/devices/" + deviceID + "/messages/deviceBound"
}

// MaxTopicLength is the longest topic an MQTT packet can carry: its length field is 16 bits. A
// message whose delivery topic would be longer cannot be delivered (issue #17: 30,000 '%' in a
// property value became a 90,069-byte topic whose length wrapped).
const MaxTopicLength = 1<<16 - 1

// DeviceBoundTopic renders a message's system and application properties into its delivery topic.
//
// Order: $.mid, $.cid, $.uid, $.to, $.exp, $.ct, $.ce, iothub-ack, $c2d.lt, then application
// properties in the sender's order. Empty system properties are omitted; $.to defaults to
// DeviceBoundTo(deviceID); iothub-ack is omitted when m.Ack is empty and rendered for any explicit
// mode (including none); $c2d.lt appears only when m.LockToken is set (extension).
func DeviceBoundTopic(deviceID string, m *Message) string {
	return "devices/" + escapeTopicID(deviceID) + "/messages/devicebound/" + EncodePropertyBag(MessageBag(deviceID, m))
}

// DeviceBoundTopicBound is an upper bound of len(DeviceBoundTopic(deviceID, m)), computed without
// building the topic (percent-encoding turns a byte into at most three): a hub validating a send
// builds the topic to measure it only when the bound passes MaxTopicLength.
func DeviceBoundTopicBound(deviceID string, m *Message) int {
	const names = len(PropMessageID) + len(PropCorrelationID) + len(PropUserID) + len(PropTo) +
		len(PropExpiry) + len(PropContentType) + len(PropContentEncoding) + len(PropAck) + len(LockTokenProperty)
	to := len(m.To)
	if to == 0 {
		to = len("/devices/") + len(deviceID) + len("/messages/deviceBound")
	}
	values := len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + to + 2*len(ExpiryFormat) +
		len(m.ContentType) + len(m.ContentEncoding) + len(m.Ack) + len(m.LockToken)
	n := len("devices/") + 3*len(deviceID) + len("/messages/devicebound/") + 3*(names+values) + 2*9
	for _, p := range m.Properties {
		n += 3*(len(p.Name)+len(p.Value)) + 2
	}
	return n
}

// DeliveryTopic is the topic a hub publishes m on for one connection: DeviceBoundTopic, with the
// extension's $c2d.lt only when the connection opted in (a plain Azure device never sees it).
func DeliveryTopic(deviceID string, m *Message, extension bool) string {
	if extension || m.LockToken == "" {
		return DeviceBoundTopic(deviceID, m)
	}
	plain := *m
	plain.LockToken = ""
	return DeviceBoundTopic(deviceID, &plain)
}

// MessageBag is the property bag DeviceBoundTopic encodes (see there for order and omissions).
func MessageBag(deviceID string, m *Message) PropertyBag {
	bag := make(PropertyBag, 0, 9+len(m.Properties))
	add := func(k, v string) {
		if v != "" {
			bag = append(bag, Property{Name: k, Value: v})
		}
	}
	add(PropMessageID, m.MessageID)
	add(PropCorrelationID, m.CorrelationID)
	add(PropUserID, m.UserID)
	to := m.To
	if to == "" {
		to = DeviceBoundTo(deviceID)
	}
	add(PropTo, to)
	if !m.ExpiryTime.IsZero() {
		add(PropExpiry, m.ExpiryTime.UTC().Format(ExpiryFormat))
	}
	add(PropContentType, m.ContentType)
	add(PropContentEncoding, m.ContentEncoding)
	add(PropAck, string(m.Ack))
	add(LockTokenProperty, m.LockToken)
	for _, p := range m.Properties {
		bag = append(bag, Property{Name: p.Name, Value: p.Value})
	}
	return bag
}

// ParseDeviceBoundTopic decodes a delivery topic into the device id and a Message without Body.
//
// The bag is everything after `devicebound/` (it may be empty, and the trailing '/' may be missing).
// Known `$.` keys fill the Message; a null system property counts as absent; iothub-ack is parsed
// case-insensitively (the C SDK's tests use `Full`); `$.exp` accepts any RFC 3339 time, and "0" or an
// empty value means no expiry (seen in the Java SDK's tests). Unknown `$.`/`$c2d.` keys and
// `iothub-*` keys are ignored (they are Azure's or our own system properties, never application
// properties); every other key becomes an application property, in wire order, a null value read
// as "".
func ParseDeviceBoundTopic(topic string) (deviceID string, m *Message, err error) {
	deviceID, rest, err := splitDeviceTopic(topic, "devicebound")
	if err != nil {
		return "", nil, err
	}
	bag, err := DecodePropertyBag(rest)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrTopic, quote(topic), err)
	}
	m, err = MessageFromBag(bag)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrTopic, quote(topic), err)
	}
	return deviceID, m, nil
}

// MessageFromBag is ParseDeviceBoundTopic's bag half: it maps a decoded property bag onto a Message.
func MessageFromBag(bag PropertyBag) (*Message, error) {
	m := &Message{}
	for _, p := range bag {
		switch p.Name {
		case PropMessageID:
			m.MessageID = p.Value
		case PropCorrelationID:
			m.CorrelationID = p.Value
		case PropUserID:
			m.UserID = p.Value
		case PropTo:
			m.To = p.Value
		case PropExpiry:
			if p.Value == "" || p.Value == "0" {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, p.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %s is not an RFC 3339 time", PropExpiry, quote(p.Value))
			}
			// Azure's clock has 100 ns ticks (seven fractional digits); keep no more than it sends.
			m.ExpiryTime = t.UTC().Truncate(100 * time.Nanosecond)
		case PropContentType:
			m.ContentType = p.Value
		case PropContentEncoding:
			m.ContentEncoding = p.Value
		case PropAck:
			if p.Null {
				continue
			}
			a, err := ParseAckMode(p.Value)
			if err != nil {
				return nil, err
			}
			m.Ack = a
		case LockTokenProperty:
			if err := ValidateLockToken(p.Value); err != nil {
				return nil, err
			}
			m.LockToken = p.Value
		default:
			if strings.HasPrefix(p.Name, "$") || strings.HasPrefix(strings.ToLower(p.Name), "iothub-") {
				continue // a system property we do not model: ignore it
			}
			m.Properties = append(m.Properties, AppProperty{Name: p.Name, Value: p.Value})
		}
	}
	return m, nil
}

// splitDeviceTopic matches `devices/{id}/messages/{kind}[/{bag}]` and returns the decoded id and bag.
func splitDeviceTopic(topic, kind string) (deviceID, bag string, err error) {
	const prefix = "devices/"
	if !strings.HasPrefix(topic, prefix) {
		return "", "", fmt.Errorf("%w: %s does not start with %q", ErrTopic, quote(topic), prefix)
	}
	rest := topic[len(prefix):]
	level, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %s has no /messages/%s", ErrTopic, quote(topic), kind)
	}
	mid := "messages/" + kind
	if rest != mid && !strings.HasPrefix(rest, mid+"/") {
		return "", "", fmt.Errorf("%w: %s: expected devices/{deviceId}/messages/%s/", ErrTopic, quote(topic), kind)
	}
	deviceID, err = unescapeTopicID(level)
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: %w", ErrTopic, quote(topic), err)
	}
	bag = strings.TrimPrefix(rest[len(mid):], "/")
	return deviceID, bag, nil
}

// EventsTopic is `devices/{id}/messages/events/{bag}`.
func EventsTopic(deviceID string, bag PropertyBag) string {
	return "devices/" + escapeTopicID(deviceID) + "/messages/events/" + EncodePropertyBag(bag)
}

// EventsFilter matches every D2C event of one device (`devices/{id}/messages/events/#`).
func EventsFilter(deviceID string) string {
	return "devices/" + escapeTopicID(deviceID) + "/messages/events/#"
}

// ParseEventsTopic decodes a D2C events topic.
func ParseEventsTopic(topic string) (deviceID string, bag PropertyBag, err error) {
	deviceID, rest, err := splitDeviceTopic(topic, "events")
	if err != nil {
		return "", nil, err
	}
	bag, err = DecodePropertyBag(rest)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrTopic, quote(topic), err)
	}
	return deviceID, bag, nil
}

// Username is a decoded MQTT CONNECT username `{host}/{deviceId}[/{moduleId}]/[?]api-version=...&...`.
type Username struct {
	HostName string
	DeviceID string
	ModuleID string
	Params   url.Values // api-version, DeviceClientType, model-id, c2d-ext, ...
}

// Username parameter names.
const (
	ParamAPIVersion       = "api-version"
	ParamDeviceClientType = "DeviceClientType"
	ParamModelID          = "model-id"
)

// APIVersion returns the api-version parameter ("" when absent).
func (u Username) APIVersion() string { return u.Params.Get(ParamAPIVersion) }

// HasExtension reports whether the username opts in to a c2d extension: `c2d-ext` values are
// comma-separated lists, and the parameter may repeat.
func (u Username) HasExtension(name string) bool {
	for _, v := range u.Params[ExtensionParam] {
		for _, e := range strings.Split(v, ",") {
			if strings.TrimSpace(e) == name {
				return true
			}
		}
	}
	return false
}

// ParseUsername accepts every variant the official SDKs send (with or without `?`, extra params).
//
// Accepted: `{host}/{deviceId}/?{query}`, `{host}/{deviceId}/{moduleId}/?{query}`, the old form
// without '?' (`{host}/{deviceId}/api-version=...&...`), and the bare `{host}/{deviceId}[/]`. The
// query is split on '&' and at the first '='; values are percent-decoded without turning '+' into a
// space, and a value that does not decode is kept as sent (DeviceClientType strings vary). Whether
// api-version is required is the hub's decision; this parser does not demand it.
func ParseUsername(s string) (Username, error) {
	bad := func(why string, args ...any) (Username, error) {
		return Username{}, fmt.Errorf("%w: username %s: %s", ErrTopic, quote(s), fmt.Sprintf(why, args...))
	}
	// The query starts at the first "/?" (device ids may contain '?', SDKs always put '/' before it).
	path, query, hasQ := s, "", false
	if i := strings.Index(s, "/?"); i >= 0 {
		path, query, hasQ = s[:i+1], s[i+2:], true
	}
	levels := strings.Split(path, "/")
	if !hasQ {
		// Old form: the last level carries the parameters when it has an '='. Ids may contain '='
		// too, so only a level that starts like a known parameter counts.
		last := levels[len(levels)-1]
		if len(levels) >= 3 && (strings.HasPrefix(last, ParamAPIVersion+"=") || strings.HasPrefix(last, ParamDeviceClientType+"=")) {
			query = last
			levels[len(levels)-1] = ""
		}
	}
	if n := len(levels); n > 1 && levels[n-1] == "" {
		levels = levels[:n-1]
	}
	if len(levels) < 2 {
		return bad("want {host}/{deviceId}/?api-version=...")
	}
	if len(levels) > 3 {
		return bad("too many levels (want {host}/{deviceId}[/{moduleId}]/?...)")
	}
	u := Username{HostName: levels[0], Params: url.Values{}}
	if err := validateHostName(u.HostName); err != nil {
		return bad("%v", err)
	}
	// Ids stand raw in the username, as in the client id (every SDK sends them unescaped).
	u.DeviceID = levels[1]
	if err := ValidateDeviceID(u.DeviceID); err != nil {
		return bad("%v", err)
	}
	if len(levels) == 3 {
		u.ModuleID = levels[2]
		if err := ValidateModuleID(u.ModuleID); err != nil {
			return bad("%v", err)
		}
	}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if dk, err := PercentDecode(k); err == nil {
			k = dk
		}
		if dv, err := PercentDecode(v); err == nil {
			v = dv
		}
		if k == "" {
			return bad("parameter with an empty name")
		}
		u.Params.Add(k, v)
	}
	return u, nil
}

// FormatUsername renders `{host}/{deviceId}[/{moduleId}]/?api-version=2021-04-12` plus extra params
// in a stable order.
//
// api-version comes first (extra's value if it has one, else APIVersion); the other parameters
// follow sorted by name, each name's values in the given order, all percent-encoded.
func FormatUsername(host, deviceID, moduleID string, extra url.Values) string {
	var sb strings.Builder
	sb.WriteString(host)
	sb.WriteByte('/')
	sb.WriteString(deviceID)
	if moduleID != "" {
		sb.WriteByte('/')
		sb.WriteString(moduleID)
	}
	sb.WriteString("/?api-version=")
	v := APIVersion
	if ev := extra.Get(ParamAPIVersion); ev != "" {
		v = ev
	}
	sb.WriteString(PercentEncode(v))
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if k != ParamAPIVersion && k != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, val := range extra[k] {
			sb.WriteByte('&')
			sb.WriteString(PercentEncode(k))
			sb.WriteByte('=')
			sb.WriteString(PercentEncode(val))
		}
	}
	return sb.String()
}

// ClientID is deviceId, or deviceId/moduleId for a module.
func ClientID(deviceID, moduleID string) string {
	if moduleID == "" {
		return deviceID
	}
	return deviceID + "/" + moduleID
}

// ParseClientID splits a client id into device and module ids and validates them.
func ParseClientID(s string) (deviceID, moduleID string, err error) {
	deviceID, moduleID, isModule := strings.Cut(s, "/")
	if err := ValidateDeviceID(deviceID); err != nil {
		return "", "", fmt.Errorf("client id %s: %w", quote(s), err)
	}
	if isModule {
		if err := ValidateModuleID(moduleID); err != nil {
			return "", "", fmt.Errorf("client id %s: %w", quote(s), err)
		}
	}
	return deviceID, moduleID, nil
}

// validateHostName accepts a DNS name or IP literal, optionally with :port: no spaces, no '/'.
func validateHostName(h string) error {
	if h == "" {
		return errors.New("host name is empty")
	}
	if len(h) > 255 {
		return fmt.Errorf("host name %s is longer than 255 bytes", quote(h))
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("/?#@&;=%\\\"'", c) >= 0 {
			return fmt.Errorf("host name %s: character %q at offset %d is not allowed", quote(h), c, i)
		}
	}
	return nil
}
