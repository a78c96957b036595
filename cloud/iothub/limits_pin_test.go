package iothub

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// A host name is at most 255 bytes (DNS) and printable ASCII: DEL (0x7f) is refused like a control
// byte.
func TestHostNameLimitsAreExact(t *testing.T) {
	cs := func(host string) string { return "HostName=" + host + ";DeviceId=d;SharedAccessKey=" + keyA }
	if _, err := ParseDeviceConnectionString(cs(strings.Repeat("h", 255))); err != nil {
		t.Fatalf("255-byte host name: %v", err)
	}
	if _, err := ParseDeviceConnectionString(cs(strings.Repeat("h", 256))); err == nil {
		t.Fatal("256-byte host name accepted")
	}
	if _, err := ParseDeviceConnectionString(cs("hub\x7f.example")); err == nil {
		t.Fatal("host name with DEL accepted")
	}
	if err := ValidateLockToken("lock\x7f"); err == nil {
		t.Fatal("lock token with DEL accepted")
	}
	if err := ValidateLockToken("lock~token"); err != nil {
		t.Fatalf("lock token with '~' (0x7e, printable): %v", err)
	}
}

// A reject reason of exactly MaxReasonLength bytes is kept whole; a longer one is cut to at most
// that many bytes without splitting a UTF-8 character.
func TestTruncateReasonAtTheLimit(t *testing.T) {
	exact := strings.Repeat("r", MaxReasonLength)
	if got := TruncateReason(exact); got != exact {
		t.Fatalf("reason of exactly %d bytes changed to %d bytes", MaxReasonLength, len(got))
	}
	long := strings.Repeat("a", MaxReasonLength-1) + "é" // the 2-byte é straddles the limit
	got := TruncateReason(long)
	if !utf8.ValidString(got) || got != strings.Repeat("a", MaxReasonLength-1) {
		t.Fatalf("truncated to %d bytes (valid UTF-8: %v), want the %d bytes before é", len(got), utf8.ValidString(got), MaxReasonLength-1)
	}
}

// Validate checks every id field, not only up to the first empty one; printable ASCII for
// contentType ends at '~' (0x7e), which is allowed; the reserved "iothub-" prefix covers the bare
// prefix itself.
func TestMessageValidateChecksEveryField(t *testing.T) {
	if err := (&Message{CorrelationID: "c\x01"}).Validate(); err == nil {
		t.Fatal("bad correlationId after an empty messageId accepted")
	}
	if err := (&Message{ContentType: "application/x~json"}).Validate(); err != nil {
		t.Fatalf("contentType with '~': %v", err)
	}
	if err := (&Message{ContentType: "a\x7f"}).Validate(); err == nil {
		t.Fatal("contentType with DEL accepted")
	}
	for _, name := range []string{"iothub-", "IoTHub-"} {
		if err := ValidatePropertyName(name); err == nil {
			t.Errorf("property name %q accepted, want the reserved prefix refused", name)
		}
	}
}

// What counts against MaxMessageSize is the sum of the body, the string system properties and
// the application properties' names and values: each part adds, none subtracts.
func TestMessageSizeIsTheSumOfItsParts(t *testing.T) {
	m := &Message{
		Body: []byte("0123456789"), MessageID: "mid", CorrelationID: "corr", UserID: "user1",
		To: "/dev/x", ContentType: "text/pl", ContentEncoding: "utf-8-x", Ack: AckFull,
		Properties: []AppProperty{{Name: "ab", Value: "cde"}},
	}
	if got, want := m.Size(), 10+3+4+5+6+7+7+4+2+3; got != want {
		t.Fatalf("Size() = %d, want %d", got, want)
	}
}

// A username's query may hold empty pairs ("?&api-version=…"), skipped without ending the parse,
// and percent-encoded parameter names, decoded.
func TestUsernameQueryEmptyPairAndEncodedName(t *testing.T) {
	u, err := ParseUsername("h/d/?&api-version=2021-04-12&model%2Did=dtmi%3Ax%3B1")
	if err != nil {
		t.Fatal(err)
	}
	if u.Params.Get(ParamAPIVersion) != "2021-04-12" || u.Params.Get("model-id") != "dtmi:x;1" {
		t.Fatalf("params %v, want api-version and model-id decoded", u.Params)
	}
}
