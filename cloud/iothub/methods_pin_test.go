package iothub

import (
	"encoding/json"
	"strings"
	"testing"
)

// Azure's direct-method ranges are inclusive at both ends: responseTimeoutInSeconds 5–300,
// connectTimeoutInSeconds 0–300, a payload of up to 128 KiB of JSON; c2d's method names are 1–128
// printable bytes.
func TestMethodRequestBoundsAreInclusive(t *testing.T) {
	n := func(v int) *int { return &v }
	ok := func(r MethodRequest) bool { _, _, err := r.Timeouts(); return err == nil }
	for _, c := range []struct {
		resp, conn *int
		want       bool
	}{
		{n(5), nil, true}, {n(300), nil, true}, {n(4), nil, false}, {n(301), nil, false},
		{nil, n(0), true}, {nil, n(300), true}, {nil, n(-1), false}, {nil, n(301), false},
	} {
		if got := ok(MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: c.resp, ConnectTimeoutInSeconds: c.conn}); got != c.want {
			t.Errorf("response %v connect %v: accepted %v, want %v", c.resp, c.conn, got, c.want)
		}
	}
	r, _, err := MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: n(7)}.Timeouts()
	if err != nil || r.Seconds() != 7 {
		t.Errorf("response timeout 7 s: %v %v", r, err)
	}
	if _, _, err := (MethodRequest{MethodName: "m", ResponseTimeoutInSeconds: n(1)}).Timeouts(); err == nil || !strings.Contains(err.Error(), "5–300") {
		t.Errorf("out-of-range response timeout: %v, want the error to name the range 5–300", err)
	}
	payload := func(size int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("a", size-2) + `"`) }
	if !ok(MethodRequest{MethodName: "m", Payload: payload(MaxMethodPayload)}) {
		t.Error("payload of exactly 128 KiB refused")
	}
	if ok(MethodRequest{MethodName: "m", Payload: payload(MaxMethodPayload + 1)}) {
		t.Error("payload over 128 KiB accepted")
	}
	if err := ValidateMethodName(strings.Repeat("m", 128)); err != nil {
		t.Errorf("128-byte method name: %v", err)
	}
	for _, bad := range []string{strings.Repeat("m", 129), "m\x7f", "a b", "a/b"} {
		if ValidateMethodName(bad) == nil {
			t.Errorf("method name %q accepted", bad)
		}
	}
}
