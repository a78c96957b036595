package iothub

import (
	"errors"
	"testing"
	"time"
)

func TestMethodTopics(t *testing.T) {
	if got := MethodRequestTopic("state", "1f"); got != "$iothub/methods/POST/state/?$rid=1f" {
		t.Fatal(got)
	}
	if got := MethodResponseTopic(200, "1f"); got != "$iothub/methods/res/200/?$rid=1f" {
		t.Fatal(got)
	}
	name, rid, err := ParseMethodRequestTopic("$iothub/methods/POST/blink/?$rid=a")
	if err != nil || name != "blink" || rid != "a" {
		t.Fatal(name, rid, err)
	}
	// Node's $rid is a UUID; other parameters may follow.
	st, rid, err := ParseMethodResponseTopic("$iothub/methods/res/404/?$rid=0b7c3a4e-1d2f-4c5b-9a8e-7f6d5c4b3a21&x=1")
	if err != nil || st != 404 || rid != "0b7c3a4e-1d2f-4c5b-9a8e-7f6d5c4b3a21" {
		t.Fatal(st, rid, err)
	}
	for _, bad := range []string{
		"$iothub/methods/res/200/", "$iothub/methods/res/ok/?$rid=1", "$iothub/methods/res/200/?rid=1",
		"$iothub/methods/res/2/00/?$rid=1", "$iothub/twin/res/200/?$rid=1", "$iothub/methods/res/12345678901/?$rid=1",
	} {
		if _, _, err := ParseMethodResponseTopic(bad); !errors.Is(err, ErrTopic) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, _, err := ParseMethodRequestTopic("$iothub/methods/POST/a$b/?$rid=1"); !errors.Is(err, ErrTopic) {
		t.Error(err)
	}
}

func TestMethodRequestTimeouts(t *testing.T) {
	n := func(v int) *int { return &v }
	r, c, err := MethodRequest{MethodName: "state"}.Timeouts()
	if err != nil || r != 30*time.Second || c != 0 {
		t.Fatal(r, c, err)
	}
	r, c, err = MethodRequest{MethodName: "state", ResponseTimeoutInSeconds: n(5), ConnectTimeoutInSeconds: n(300)}.Timeouts()
	if err != nil || r != 5*time.Second || c != 300*time.Second {
		t.Fatal(r, c, err)
	}
	for _, bad := range []MethodRequest{
		{}, {MethodName: "x", ResponseTimeoutInSeconds: n(4)}, {MethodName: "x", ResponseTimeoutInSeconds: n(301)},
		{MethodName: "x", ConnectTimeoutInSeconds: n(301)}, {MethodName: "x", ConnectTimeoutInSeconds: n(-1)},
		{MethodName: "x y"}, {MethodName: "x", Payload: []byte("{")},
		{MethodName: "x", Payload: make([]byte, MaxMethodPayload+1)},
	} {
		if _, _, err := bad.Timeouts(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestMethodPayload(t *testing.T) {
	for in, want := range map[string]string{"": "null", " ": "null", `{"a":1}`: `{"a":1}`, "done": `"done"`, "3": "3"} {
		if got := string(MethodPayload([]byte(in))); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

func TestDeviceNotOnlineKeepsItsName(t *testing.T) {
	e := NotOnline("device %q is not connected", "pi-1")
	body := e.Response()
	if body.Code != "DeviceNotOnline" || body.ErrorCode != 404103 || body.Message != `ErrorCode:DeviceNotOnline;device "pi-1" is not connected` {
		t.Fatalf("%+v", body)
	}
	back := ParseErrorResponse(404, []byte(`{"Message":"ErrorCode:DeviceNotOnline;Timed out waiting for device to connect.","ExceptionMessage":"Tracking ID:x"}`))
	if back.CodeName() != "DeviceNotOnline" || !errors.Is(back, NotOnline("")) || errors.Is(back, &Error{Code: CodeDeviceMessageNotFound, Name: "DeviceMessageNotFound"}) {
		t.Fatalf("%+v", back)
	}
	if !errors.Is(back, &Error{Code: CodeDeviceNotOnline}) {
		t.Fatal("a target without a name matches the number")
	}
}
