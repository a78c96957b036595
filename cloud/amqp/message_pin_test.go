package amqp

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/iothub"
)

func deviceBound(m *frames.Message) *frames.Message {
	to := "/devices/d1/messages/devicebound"
	if m.Properties == nil {
		m.Properties = &frames.MessageProperties{}
	}
	m.Properties.To = &to
	return m
}

// A message's expiry (AMQP 1.0 §3.2.1, §3.2.4): absolute-expiry-time when set, else the header's
// ttl counted from now. A ttl of 0 and an absolute-expiry-time of 0 (the epoch, what a client that
// leaves it unset may send) are no expiry.
func TestSendRequestExpiryFromAbsoluteExpiryOrTTL(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	epoch := time.Unix(0, 0)
	later := now.Add(time.Hour)
	for _, tc := range []struct {
		name string
		m    *frames.Message
		want *time.Time
	}{
		{"ttl 10 s", &frames.Message{Header: &frames.MessageHeader{TTL: 10 * time.Second}}, new(now.Add(10 * time.Second))},
		{"ttl 0", &frames.Message{Header: &frames.MessageHeader{TTL: 0}}, nil},
		{"absolute-expiry-time", &frames.Message{Properties: &frames.MessageProperties{AbsoluteExpiryTime: &later}, Header: &frames.MessageHeader{TTL: time.Second}}, &later},
		{"absolute-expiry-time 0 and ttl 10 s", &frames.Message{Properties: &frames.MessageProperties{AbsoluteExpiryTime: &epoch}, Header: &frames.MessageHeader{TTL: 10 * time.Second}}, new(now.Add(10 * time.Second))},
		{"absolute-expiry-time 0 alone", &frames.Message{Properties: &frames.MessageProperties{AbsoluteExpiryTime: &epoch}}, nil},
	} {
		_, req, err := toSendRequest(deviceBound(tc.m), now)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		switch {
		case tc.want == nil && req.ExpiryTimeUTC != nil:
			t.Errorf("%s: expiry %v, want none", tc.name, *req.ExpiryTimeUTC)
		case tc.want != nil && (req.ExpiryTimeUTC == nil || !req.ExpiryTimeUTC.Equal(*tc.want)):
			t.Errorf("%s: expiry %v, want %v", tc.name, req.ExpiryTimeUTC, *tc.want)
		}
	}
}

// iothub-ack is taken out of the application properties; every other property is kept, those
// that sort after it included.
func TestSendRequestKeepsEveryPropertyBesidesIothubAck(t *testing.T) {
	m := deviceBound(&frames.Message{ApplicationProperties: map[string]any{"a": "1", "iothub-ack": "Full", "zz": "2"}})
	_, req, err := toSendRequest(m, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if req.Ack != iothub.AckFull {
		t.Errorf("ack %q, want full", req.Ack)
	}
	if len(req.Properties) != 2 || req.Properties[0] != (iothub.AppProperty{Name: "a", Value: "1"}) || req.Properties[1] != (iothub.AppProperty{Name: "zz", Value: "2"}) {
		t.Errorf("properties %v, want a=1 and zz=2", req.Properties)
	}
}

// The body (§3.2.5–§3.2.8): data sections concatenated, an amqp-value string or binary as its
// bytes, any other amqp-value or an amqp-sequence refused, no body an empty one.
func TestSendRequestBodySections(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *frames.Message
		body string
		bad  bool
	}{
		{"two data sections", &frames.Message{Data: [][]byte{[]byte("ab"), []byte("cd")}}, "abcd", false},
		{"amqp-value string", &frames.Message{Value: "text"}, "text", false},
		{"amqp-value binary", &frames.Message{Value: []byte("bin")}, "bin", false},
		{"amqp-value int", &frames.Message{Value: int64(5)}, "", true},
		{"amqp-sequence", &frames.Message{Sequence: [][]any{{"x"}}}, "", true},
		{"no body", &frames.Message{}, "", false},
	} {
		_, req, err := toSendRequest(deviceBound(tc.m), time.Now())
		var ef *errField
		if tc.bad {
			if !errors.As(err, &ef) {
				t.Errorf("%s: %v, want it refused", tc.name, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(req.Body, []byte(tc.body)) {
			t.Errorf("%s: body %q, %v, want %q", tc.name, req.Body, err, tc.body)
		}
	}
}

// `to` is /devices/{deviceId}/messages/devicebound: an empty device id or another node of the
// device is refused.
func TestDeviceBoundToNeedsADeviceIDAndTheDeviceBoundNode(t *testing.T) {
	for to, want := range map[string]string{
		"/devices/d1/messages/devicebound":    "d1",
		"/devices/d%2F1/messages/DeviceBound": "d/1",
		"/devices//messages/devicebound":      "",
		"/devices/d1/messages/events":         "",
		"/devices/d1/messages/deviceboundx":   "",
	} {
		id, err := parseDeviceBoundTo(to)
		if want == "" {
			if err == nil {
				t.Errorf("to %q: device %q, want it refused", to, id)
			}
			continue
		}
		if err != nil || id != want {
			t.Errorf("to %q: device %q, %v, want %q", to, id, err, want)
		}
	}
}

// A delivery to a device carries each property the message has (§3.2.4) and none it lacks: an
// empty user-id, to, content-type or content-encoding is absent on the wire, not an empty value,
// and a message without application properties has no application-properties section.
func TestHubMessagePropertiesOnTheWireOnlyWhenSet(t *testing.T) {
	exp := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	roundTrip := func(m *iothub.Message) *frames.Message {
		t.Helper()
		b, err := encodeMessage(fromHubMessage(m))
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	full := roundTrip(&iothub.Message{MessageID: "m", UserID: "u", To: "/devices/d1/messages/devicebound", ContentType: "application/json",
		ContentEncoding: "utf-8", ExpiryTime: exp, Body: []byte("b"), Properties: []iothub.AppProperty{{Name: "k", Value: "v"}}})
	p := full.Properties
	if p == nil || string(p.UserID) != "u" || p.To == nil || *p.To != "/devices/d1/messages/devicebound" || p.ContentType == nil || *p.ContentType != "application/json" ||
		p.ContentEncoding == nil || *p.ContentEncoding != "utf-8" || p.AbsoluteExpiryTime == nil || !p.AbsoluteExpiryTime.Equal(exp) {
		t.Fatalf("properties of a message with every field set: %+v", p)
	}
	if full.ApplicationProperties["k"] != "v" {
		t.Fatalf("application properties %v, want k=v", full.ApplicationProperties)
	}
	bare := roundTrip(&iothub.Message{MessageID: "m", Body: []byte("b")})
	p = bare.Properties
	if p == nil || p.UserID != nil || p.To != nil || p.ContentType != nil || p.ContentEncoding != nil || p.AbsoluteExpiryTime != nil {
		t.Fatalf("properties of a message with only an id: %+v, want only message-id", p)
	}
	if bare.ApplicationProperties != nil {
		t.Fatalf("a message without application properties has the section %v", bare.ApplicationProperties)
	}
}
