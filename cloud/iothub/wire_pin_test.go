package iothub

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The expectations in this file are Azure's documented wire forms, written out by hand.

const pinKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31

// se is Unix seconds after 1970: 0 is no expiry at all, and a token claiming it is refused.
func TestSASTokenSeZeroIsMalformed(t *testing.T) {
	tok := "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=" + PercentEncode(sign(mustKey(t), "h%2Fdevices%2Fd", "0")) + "&se=0"
	if _, err := ParseSASToken(tok); !errors.Is(err, ErrTokenMalformed) || !strings.Contains(err.Error(), "se") {
		t.Fatalf("se=0: %v, want ErrTokenMalformed naming se", err)
	}
	if _, err := ParseSASToken(strings.Replace(tok, "se=0", "se=1", 1)); err != nil {
		t.Fatalf("se=1 (the first second after 1970) is a valid expiry: %v", err)
	}
}

// Signing a token that expires at 0 (or before 1970) would make one that no hub accepts.
func TestSASTokenSignedWithExpiryZeroIsRefused(t *testing.T) {
	for _, exp := range []time.Time{time.Unix(0, 0), time.Unix(-1, 0), {}} {
		if tok, err := NewSASToken("h/devices/d", pinKey, "", exp); err == nil {
			t.Errorf("NewSASToken(expiry %v) = %q, want an error", exp, tok)
		}
	}
	if _, err := NewSASToken("h/devices/d", pinKey, "", time.Unix(1, 0)); err != nil {
		t.Errorf("NewSASToken(expiry 1970-01-01T00:00:01Z): %v", err)
	}
}

// Only device and module ids are percent-decoded when matching a token's resource (the C# SDK
// encodes them); the host is a DNS name and matches as written.
func TestSASResourceHostSegmentIsNotPercentDecoded(t *testing.T) {
	for _, tc := range []struct {
		resource, target string
		want             bool
	}{
		{"c2d%2Etest/devices/d", "c2d.test/devices/d", false},
		{"c2d.test/devices/d", "c2d.test/devices/d", true},
		{"C2D.test/devices/d", "c2d.test/devices/d", true},
		{"c2d.test/devices/a%2Fb", "c2d.test/devices/a/b", false}, // one segment never becomes two
		{"c2d.test/devices/d%2D1", "c2d.test/devices/d-1", true},
		{"c2d.test/devices/d/modules/m%2D1", "c2d.test/devices/d/modules/m-1", true},
	} {
		if got := ResourceCovers(tc.resource, tc.target); got != tc.want {
			t.Errorf("ResourceCovers(%q, %q) = %v, want %v", tc.resource, tc.target, got, tc.want)
		}
	}
}

// A '%' must be followed by two hex digits; anything else is an error, never a guessed byte.
func TestPercentDecodeRejectsNonHexEscape(t *testing.T) {
	for _, s := range []string{"%4G", "%G4", "a%4", "%", "%%41", "x%4g", "%:0", "%@0", "%`0", "%/0", "%0/"} {
		if got, err := PercentDecode(s); err == nil {
			t.Errorf("PercentDecode(%q) = %q, want an error", s, got)
		}
	}
	for in, want := range map[string]string{"%41%4a%4A%7e%7E%30%39%2f": "AJJ~~09/", "a%20b": "a b", "+": "+", "%FF": "\xff", "%fa": "\xfa", "%af": "\xaf"} {
		if got, err := PercentDecode(in); err != nil || got != want {
			t.Errorf("PercentDecode(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
}

// RFC 3986's unreserved set stays as it is — '~' included, as in Python's quote(safe="") and
// encodeURIComponent — and everything else is escaped with upper-case hex.
func TestPercentEncodeUnreservedSetKeepsTilde(t *testing.T) {
	for in, want := range map[string]string{
		"AZaz09-._~":   "AZaz09-._~",
		"~":            "~",
		" ":            "%20",
		"$.mid":        "%24.mid",
		"a/b?c=d&e":    "a%2Fb%3Fc%3Dd%26e",
		"!'()*+,;@":    "%21%27%28%29%2A%2B%2C%3B%40",
		"\x00\x7f\xff": "%00%7F%FF",
		"@[`{/:":       "%40%5B%60%7B%2F%3A",
	} {
		if got := PercentEncode(in); got != want {
			t.Errorf("PercentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

// A property with an empty name cannot be told apart from an empty pair on the wire: it is left
// out, and the properties around it keep their separators.
func TestEncodePropertyBagSkipsEmptyNames(t *testing.T) {
	for _, tc := range []struct {
		bag  PropertyBag
		want string
	}{
		{PropertyBag{{Name: "", Value: "x"}}, ""},
		{PropertyBag{{Name: "", Value: "x"}, {Name: "a", Value: "1"}}, "a=1"},
		{PropertyBag{{Name: "a", Value: "1"}, {Name: "", Null: true}, {Name: "b", Value: ""}}, "a=1&b="},
		{PropertyBag{{Name: "a", Null: true}, {Name: "b", Value: "2"}}, "a&b=2"},
	} {
		if got := EncodePropertyBag(tc.bag); got != tc.want {
			t.Errorf("EncodePropertyBag(%+v) = %q, want %q", tc.bag, got, tc.want)
		}
	}
}

// A bare `iothub-ack` (null value) is as if absent: the message asks for no feedback mode, and is
// not "none" explicitly.
func TestBareIothubAckIsAbsent(t *testing.T) {
	_, m, err := ParseDeviceBoundTopic("devices/d/messages/devicebound/%24.mid=m1&iothub-ack")
	if err != nil {
		t.Fatal(err)
	}
	if m.Ack != "" {
		t.Fatalf("bare iothub-ack parsed as Ack %q, want absent", m.Ack)
	}
	_, m, err = ParseDeviceBoundTopic("devices/d/messages/devicebound/iothub-ack=")
	if err != nil || m.Ack != AckNone {
		t.Fatalf("iothub-ack= (empty): %+v, %v; want Ack none", m, err)
	}
}

// Azure's clock has 100 ns ticks: a $.exp with more digits keeps seven, cut (not rounded).
func TestExpiryWithMoreThanSevenFractionalDigitsIsTruncated(t *testing.T) {
	for in, want := range map[string]string{
		"2026-01-02T03:04:05.123456789Z":     "2026-01-02T03:04:05.1234567Z",
		"2026-01-02T03:04:05.99999999Z":      "2026-01-02T03:04:05.9999999Z",
		"2026-01-02T03:04:05.1234567Z":       "2026-01-02T03:04:05.1234567Z",
		"2026-01-02T05:04:05.12345678+02:00": "2026-01-02T03:04:05.1234567Z",
	} {
		_, m, err := ParseDeviceBoundTopic("devices/d/messages/devicebound/%24.exp=" + PercentEncode(in))
		if err != nil {
			t.Fatalf("$.exp=%s: %v", in, err)
		}
		if got := m.ExpiryTime.Format(ExpiryFormat); got != want || m.ExpiryTime.Location() != time.UTC {
			t.Errorf("$.exp=%s read as %s (%v), want %s UTC", in, got, m.ExpiryTime.Location(), want)
		}
	}
}

func mustKey(t *testing.T) []byte {
	t.Helper()
	k, err := decodeKey(pinKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The MAC covers se exactly as sent: a token whose se has a leading zero verifies.
func TestSASTokenSignatureOverRawSe(t *testing.T) {
	sr := PercentEncode("h/devices/d")
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + PercentEncode(sign(mustKey(t), sr, "04102444800")) + "&se=04102444800"
	p, err := ParseSASToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(pinKey, "h/devices/d", time.Unix(0, 0).Add(time.Hour)); err != nil {
		t.Fatalf("token signed over se=04102444800: %v", err)
	}
	if p.String() != tok {
		t.Fatalf("String() = %q, want the token as sent %q", p.String(), tok)
	}
}

// Every segment after a percent-decoded one is still compared: a device's token never covers
// another module of it, or another device's module.
func TestSASResourceEverySegmentCompared(t *testing.T) {
	for _, tc := range []struct {
		resource, target string
	}{
		{"c2d.test/devices/d%2D1/modules/a", "c2d.test/devices/d-1/modules/b"},
		{"c2d.test/devices/d%2D1/x", "c2d.test/devices/d-1/y"},
	} {
		if ResourceCovers(tc.resource, tc.target) {
			t.Errorf("ResourceCovers(%q, %q) = true", tc.resource, tc.target)
		}
	}
}

// A token built in code (no raw fields) renders sr percent-encoded and se in Unix seconds.
func TestSASTokenStringOfConstructedToken(t *testing.T) {
	tok := &SASToken{Resource: "h/devices/d", Signature: "c2ln", Expiry: time.Unix(1700000000, 0)}
	if got, want := tok.String(), "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=c2ln&se=1700000000"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}
