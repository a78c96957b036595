package iothub

import (
	"errors"
	"strings"
	"testing"
)

func TestMessageValidate(t *testing.T) {
	ok := Message{
		MessageID: "a-Z.0:+%_#*?!(),=@;$'", CorrelationID: "c1", ContentType: "application/json; charset=utf-8",
		Ack: AckFull, Properties: []AppProperty{{"led", "on"}, {"x!#$%&'*+-.^_`|~", "v!#$%&'*+-.^_`|~"}, {"e", ""}},
		Body: []byte("{}"),
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("b", MaxMessageSize)
	cases := []struct {
		name    string
		mut     func(m *Message)
		want    error
		mention string
	}{
		{"long id", func(m *Message) { m.MessageID = strings.Repeat("x", 129) }, ErrInvalid, "129 characters"},
		{"id char", func(m *Message) { m.MessageID = "a b" }, ErrInvalid, `messageId "a b": character ' ' at offset 1`},
		{"cid char", func(m *Message) { m.CorrelationID = "a/b" }, ErrInvalid, "correlationId"},
		{"ack", func(m *Message) { m.Ack = "always" }, ErrInvalid, `iothub-ack "always"`},
		{"$ name", func(m *Message) { m.Properties = []AppProperty{{"$.mid", "x"}} }, ErrInvalid, "reserved"},
		{"$c2d name", func(m *Message) { m.Properties = []AppProperty{{"$c2d.lt", "x"}} }, ErrInvalid, "reserved"},
		{"iothub- name", func(m *Message) { m.Properties = []AppProperty{{"IotHub-Ack", "x"}} }, ErrInvalid, "iothub- prefix"},
		{"empty name", func(m *Message) { m.Properties = []AppProperty{{"", "x"}} }, ErrInvalid, "properties[0]: invalid: property name is empty"},
		{"name char", func(m *Message) { m.Properties = []AppProperty{{"a", "1"}, {"a b", "x"}} }, ErrInvalid, `properties[1]`},
		{"value char", func(m *Message) { m.Properties = []AppProperty{{"k", "x/y"}} }, ErrInvalid, `property "k" value "x/y"`},
		{"dup", func(m *Message) { m.Properties = []AppProperty{{"k", "1"}, {"k", "2"}} }, ErrInvalid, `duplicate property name "k"`},
		{"ct", func(m *Message) { m.ContentType = "a\nb" }, ErrInvalid, "contentType"},
		{"lock token", func(m *Message) { m.LockToken = "a/b" }, ErrInvalid, "lock token"},
		{"size", func(m *Message) { m.Body = []byte(big) }, ErrMessageTooLarge, "exceeds 65536"},
	}
	for _, c := range cases {
		m := ok
		m.Properties = append([]AppProperty(nil), ok.Properties...)
		c.mut(&m)
		err := m.Validate()
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %v, want %v mentioning %q", c.name, err, c.want, c.mention)
		}
	}
	// Exactly at the limit is fine; one byte more is not.
	m := Message{Properties: []AppProperty{{"ab", "cd"}}}
	m.Body = make([]byte, MaxMessageSize-4)
	if err := m.Validate(); err != nil || m.Size() != MaxMessageSize {
		t.Fatal(m.Size(), err)
	}
	m.MessageID = "x"
	if err := m.Validate(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatal(err)
	}
	// Error values are truncated.
	err := (&Message{MessageID: strings.Repeat("é", 100)}).Validate()
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("untruncated: %v", err)
	}
}

func TestDeviceID(t *testing.T) {
	for _, good := range []string{"d", "pi-kitchen_01", "a-.+%_#*?!(),=@$'", strings.Repeat("x", 128)} {
		if err := ValidateDeviceID(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "a:b", "a;b", "é", strings.Repeat("x", 129), "a\x00"} {
		if err := ValidateDeviceID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := ValidateMessageID("a:b;c"); err != nil {
		t.Error(err)
	}
}

func TestAckModeWants(t *testing.T) {
	table := map[AckMode][]FeedbackStatus{
		AckNone: nil, "": nil,
		AckPositive: {StatusSuccess},
		AckNegative: {StatusExpired, StatusDeliveryCountExceeded, StatusRejected, StatusPurged},
		AckFull:     {StatusSuccess, StatusExpired, StatusDeliveryCountExceeded, StatusRejected, StatusPurged},
	}
	all := []FeedbackStatus{StatusSuccess, StatusExpired, StatusDeliveryCountExceeded, StatusRejected, StatusPurged}
	for mode, wanted := range table {
		for _, st := range all {
			want := false
			for _, w := range wanted {
				want = want || w == st
			}
			if got := mode.Wants(st); got != want {
				t.Errorf("%q.Wants(%s) = %v", mode, st, got)
			}
		}
	}
	if a, err := ParseAckMode("Full"); err != nil || a != AckFull {
		t.Error(a, err)
	}
}
