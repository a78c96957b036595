package amqp

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// ackProperty is the application property carrying iothub-ack on a sent message.
const ackProperty = "iothub-ack"

// errField is a message the hub cannot take as sent (rejected with amqp:invalid-field or
// amqp:decode-error).
type errField struct {
	cond encoding.ErrCond
	msg  string
}

func (e *errField) Error() string { return e.msg }

func badField(format string, args ...any) error {
	return &errField{condArgument, fmt.Sprintf(format, args...)}
}

// toSendRequest maps a message sent on /messages/devicebound to the hub's SendRequest and the
// device it is for (its `to`: /devices/{url-encoded id}/messages/devicebound).
func toSendRequest(m *frames.Message, now time.Time) (string, iothub.SendRequest, error) {
	var req iothub.SendRequest
	p := m.Properties
	if p == nil || p.To == nil {
		return "", req, badField("message has no to: set it to /devices/{deviceId}/messages/devicebound")
	}
	id, err := parseDeviceBoundTo(*p.To)
	if err != nil {
		return "", req, err
	}
	if req.MessageID, err = idString("message-id", p.MessageID); err != nil {
		return "", req, err
	}
	if req.CorrelationID, err = idString("correlation-id", p.CorrelationID); err != nil {
		return "", req, err
	}
	req.UserID = string(p.UserID)
	if p.ContentType != nil {
		req.ContentType = *p.ContentType
	}
	if p.ContentEncoding != nil {
		req.ContentEncoding = *p.ContentEncoding
	}
	if p.AbsoluteExpiryTime != nil && !p.AbsoluteExpiryTime.IsZero() && p.AbsoluteExpiryTime.Unix() > 0 {
		t := p.AbsoluteExpiryTime.UTC()
		req.ExpiryTimeUTC = &t
	} else if m.Header != nil && m.Header.TTL > 0 {
		t := now.Add(m.Header.TTL).UTC()
		req.ExpiryTimeUTC = &t
	}
	names := make([]string, 0, len(m.ApplicationProperties))
	for k := range m.ApplicationProperties {
		names = append(names, k)
	}
	slices.Sort(names) // AMQP maps have an order on the wire, but the decoder does not keep it
	for _, k := range names {
		v, err := propString(k, m.ApplicationProperties[k])
		if err != nil {
			return "", req, err
		}
		if strings.EqualFold(k, ackProperty) {
			req.Ack = iothub.AckMode(strings.ToLower(v))
			continue
		}
		req.Properties = append(req.Properties, iothub.AppProperty{Name: k, Value: v})
	}
	switch {
	case len(m.Data) > 0:
		for _, d := range m.Data {
			req.Body = append(req.Body, d...)
		}
	case m.Value != nil:
		switch v := m.Value.(type) {
		case string:
			req.Body = []byte(v)
		case []byte:
			req.Body = v
		default:
			return "", req, badField("body is an amqp-value of type %T: send a data section (bytes) or a string", m.Value)
		}
	case m.Sequence != nil:
		return "", req, badField("body is an amqp-sequence: send a data section")
	}
	return id, req, nil
}

// parseDeviceBoundTo reads the device id from `/devices/{id}/messages/devicebound` (any case of
// deviceBound; the id percent-encoded or not).
func parseDeviceBoundTo(to string) (string, error) {
	rest, ok := strings.CutPrefix(normalizeAddress(to), "/devices/")
	if !ok {
		return "", badField("to %q: want /devices/{deviceId}/messages/devicebound", to)
	}
	i := strings.LastIndex(rest, "/messages/")
	if i <= 0 || !strings.EqualFold(rest[i:], "/messages/devicebound") {
		return "", badField("to %q: want /devices/{deviceId}/messages/devicebound", to)
	}
	id, err := url.PathUnescape(rest[:i])
	if err != nil {
		return "", badField("to %q: device id: %v", to, err)
	}
	return id, nil
}

// idString renders a message or correlation id: AMQP allows string, uuid, ulong and binary;
// the hub keeps ids as strings (a uuid in its canonical form).
func idString(field string, v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case encoding.UUID:
		return x.String(), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case []byte:
		return string(x), nil
	}
	return "", badField("%s of type %T: want a string, uuid, ulong or binary", field, v)
}

var uuidShape = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// idValue is how an id goes back on the wire: a uuid when it has a uuid's shape (Azure's SDKs send
// those as AMQP uuid), else a string.
func idValue(s string) any {
	if s == "" {
		return nil
	}
	if uuidShape.MatchString(s) {
		var u encoding.UUID
		hex := strings.ReplaceAll(s, "-", "")
		for i := range u {
			b, _ := strconv.ParseUint(hex[2*i:2*i+2], 16, 8)
			u[i] = byte(b)
		}
		return u
	}
	return s
}

// propString renders an application property value: Azure's SDKs send strings; numbers and
// booleans are accepted as their text.
func propString(name string, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(x), nil
	case encoding.UUID:
		return x.String(), nil
	case encoding.Symbol:
		return string(x), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case nil:
		return "", nil
	}
	return "", badField("application property %q has a value of type %T: want a string", name, v)
}

// fromHubMessage is a delivery to a device's AMQP receive link.
func fromHubMessage(m *iothub.Message) *frames.Message {
	p := &frames.MessageProperties{MessageID: idValue(m.MessageID), CorrelationID: idValue(m.CorrelationID)}
	if m.UserID != "" {
		p.UserID = []byte(m.UserID)
	}
	if m.To != "" {
		to := m.To
		p.To = &to
	}
	if m.ContentType != "" {
		ct := m.ContentType
		p.ContentType = &ct
	}
	if m.ContentEncoding != "" {
		ce := m.ContentEncoding
		p.ContentEncoding = &ce
	}
	if !m.ExpiryTime.IsZero() {
		exp := m.ExpiryTime
		p.AbsoluteExpiryTime = &exp
	}
	out := &frames.Message{Properties: p, Data: [][]byte{m.Body}}
	if len(m.Properties) > 0 {
		out.ApplicationProperties = make(map[string]any, len(m.Properties))
		for _, ap := range m.Properties {
			out.ApplicationProperties[ap.Name] = ap.Value
		}
	}
	return out
}
