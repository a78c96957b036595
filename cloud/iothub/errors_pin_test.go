package iothub

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// 404103 has two names (Azure's DeviceNotOnline of a direct method, c2d's DeviceMessageNotFound):
// the body's "code" decides which one a client sees, and only those two names are honoured; any
// other "code" text leaves the number's own name.
func TestParseErrorResponseKeepsOnlyTheKnownSecondName(t *testing.T) {
	body, err := json.Marshal(NotOnline("device d is not connected").Response())
	if err != nil {
		t.Fatal(err)
	}
	e := ParseErrorResponse(404, body)
	if e.CodeName() != NameDeviceNotOnline || !errors.Is(e, &Error{Code: CodeDeviceNotOnline, Name: NameDeviceNotOnline}) {
		t.Fatalf("DeviceNotOnline body %s parsed as %v (name %q), want DeviceNotOnline", body, e, e.CodeName())
	}
	cases := []struct {
		body, want string
	}{
		{`{"errorCode":404103,"code":"DeviceMessageNotFound","detail":"x"}`, "DeviceMessageNotFound"},
		{`{"errorCode":404103,"code":"","detail":"x"}`, "DeviceMessageNotFound"},
		{`{"errorCode":404001,"code":"Bogus","detail":"x"}`, "DeviceNotFound"},
		{`{"errorCode":404001,"code":"DeviceNotOnline","detail":"x"}`, NameDeviceNotOnline},
	}
	for _, c := range cases {
		e := ParseErrorResponse(404, []byte(c.body))
		if e.CodeName() != c.want {
			t.Errorf("%s: name %q, want %q", c.body, e.CodeName(), c.want)
		}
		if c.want != NameDeviceNotOnline && errors.Is(e, &Error{Code: e.Code, Name: NameDeviceNotOnline}) {
			t.Errorf("%s: matches DeviceNotOnline", c.body)
		}
	}
}

// errors.Is with a typed nil *Error target is false, never a panic.
func TestErrorIsTypedNilTargetIsFalse(t *testing.T) {
	var target *Error
	if errors.Is(Errorf(CodeDeviceNotFound, "d"), target) {
		t.Fatal("matched a nil *Error")
	}
}

// A lock token is 1–128 bytes (MaxLockTokenLength): 128 is valid, 129 is not.
func TestLockTokenLengthLimitIsInclusive(t *testing.T) {
	if err := ValidateLockToken(strings.Repeat("a", 128)); err != nil {
		t.Fatalf("128-byte token: %v", err)
	}
	if err := ValidateLockToken(strings.Repeat("a", 129)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("129-byte token: %v, want ErrInvalid", err)
	}
}

// A service token needs a positive lifetime: ttl 0 would sign a token that is already expired.
func TestServiceTokenZeroTTLRefused(t *testing.T) {
	c := ServiceConnectionString{HostName: "h", SharedAccessKeyName: "service", SharedAccessKey: keyA}
	if _, err := c.Token(time.Unix(1_700_000_000, 0), 0); err == nil {
		t.Fatal("ttl 0 signed a token")
	}
	if _, err := c.Token(time.Unix(1_700_000_000, 0), time.Second); err != nil {
		t.Fatalf("ttl 1s: %v", err)
	}
}
