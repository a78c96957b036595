package iothub

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDispositionTopic(t *testing.T) {
	top := DispositionTopic("pi-1", "lt-7f3a", DispositionReject)
	if top != "$c2d/devices/pi-1/messages/devicebound/lt-7f3a/reject" {
		t.Fatal(top)
	}
	dev, lt, d, err := ParseDispositionTopic(top)
	if err != nil || dev != "pi-1" || lt != "lt-7f3a" || d != DispositionReject {
		t.Fatal(dev, lt, d, err)
	}
	if f := DispositionFilter("pi-1"); f != "$c2d/devices/pi-1/messages/devicebound/#" {
		t.Fatal(f)
	}
	for _, bad := range []string{
		"devices/pi-1/messages/devicebound/lt/complete",
		"$c2d/devices/pi-1/messages/devicebound/lt/finish",
		"$c2d/devices/pi-1/messages/devicebound//complete",
		"$c2d/devices/pi-1/messages/devicebound/lt",
		"$c2d/devices/pi-1/messages/devicebound/a/b/complete",
		"$c2d/devices/pi 1/messages/devicebound/lt/complete",
		"$c2d/devices/pi-1/messages/events/lt/complete",
	} {
		if _, _, _, err := ParseDispositionTopic(bad); !errors.Is(err, ErrTopic) {
			t.Errorf("ParseDispositionTopic(%q) = %v", bad, err)
		}
	}
	for _, bad := range []string{"", "a/b", "a+b", "a#b", "a b", strings.Repeat("x", 129)} {
		if ValidateLockToken(bad) == nil {
			t.Errorf("lock token %q accepted", bad)
		}
	}
}

func TestDeliveryTopic(t *testing.T) {
	m := &Message{MessageID: "m1", LockToken: "lt1"}
	if got := DeliveryTopic("d", m, true); !strings.Contains(got, "&%24c2d.lt=lt1") {
		t.Errorf("extension: %s", got)
	}
	if got := DeliveryTopic("d", m, false); strings.Contains(got, "c2d") || m.LockToken != "lt1" {
		t.Errorf("plain: %s (lock token %q)", got, m.LockToken)
	}
}

func TestRejectReportEvent(t *testing.T) {
	topic, payload := RejectReportEvent("pi-1", "cmd:42", "pin GPIO99 not declared")
	want := "devices/pi-1/messages/events/c2d-report=reject&c2d-original-mid=cmd%3A42&%24.ct=application%2Fjson&%24.ce=utf-8"
	if topic != want {
		t.Fatalf("topic\n got %s\nwant %s", topic, want)
	}
	if string(payload) != `{"originalMessageId":"cmd:42","disposition":"reject","reason":"pin GPIO99 not declared"}` {
		t.Fatalf("payload %s", payload)
	}
	dev, bag, err := ParseEventsTopic(topic)
	if err != nil || dev != "pi-1" {
		t.Fatal(err)
	}
	r, ok, err := ParseRejectReport(bag, payload)
	if err != nil || !ok || r.OriginalMessageID != "cmd:42" || r.Reason != "pin GPIO99 not declared" {
		t.Fatal(r, ok, err)
	}
	if _, ok, err := ParseRejectReport(PropertyBag{{Name: "temp", Value: "1"}}, []byte("x")); ok || err != nil {
		t.Fatal("plain event taken for a report")
	}
	if _, ok, err := ParseRejectReport(bag, []byte(`{"originalMessageId":"other"}`)); !ok || !errors.Is(err, ErrInvalid) {
		t.Fatal("mismatched mid accepted")
	}
	_, long := RejectReportEvent("d", "m", strings.Repeat("é", MaxReasonLength))
	var rr RejectReport
	if err := json.Unmarshal(long, &rr); err != nil || len(rr.Reason) > MaxReasonLength || !strings.HasSuffix(rr.Reason, "é") {
		t.Fatalf("long reason: %d %v", len(rr.Reason), err)
	}
}

func TestDispositionBody(t *testing.T) {
	for in, want := range map[string]string{"": "", "  ": "", `{}`: "", `{"reason":"busy","x":1}`: "busy"} {
		b, err := ParseDispositionBody([]byte(in))
		if err != nil || b.Reason != want {
			t.Errorf("%q: %+v %v", in, b, err)
		}
	}
	if _, err := ParseDispositionBody([]byte("busy")); !errors.Is(err, ErrInvalid) {
		t.Error("non-JSON accepted")
	}
}

func TestFeedbackRecordJSON(t *testing.T) {
	// Azure's documented feedback record, field for field; our additions are omitted when empty.
	r := FeedbackRecord{
		OriginalMessageID: "0987654321", DeviceID: "123", DeviceGenerationID: "abcdefghijklmnopqrstuvwxyz",
		EnqueuedTimeUTC: time.Date(2015, 7, 28, 16, 24, 48, 789000000, time.UTC),
		StatusCode:      StatusSuccess, Description: FeedbackDescription(StatusSuccess),
	}
	b, _ := json.Marshal(r)
	want := `{"originalMessageId":"0987654321","deviceId":"123","deviceGenerationId":"abcdefghijklmnopqrstuvwxyz","enqueuedTimeUtc":"2015-07-28T16:24:48.789Z","statusCode":"Success","description":"Success"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	for _, st := range []FeedbackStatus{StatusSuccess, StatusExpired, StatusDeliveryCountExceeded, StatusRejected, StatusPurged} {
		if got, err := ParseFeedbackStatus(string(st)); err != nil || got != st || FeedbackDescription(st) == "" {
			t.Errorf("%s: %v", st, err)
		}
	}
	if _, err := ParseFeedbackStatus("success"); err == nil {
		t.Error("lower-case status accepted")
	}
	if StatusRejected.Terminal() != StateDeadLettered || StatusSuccess.Terminal() != StateCompleted || StatusPurged.Terminal() != StatePurged {
		t.Error("Terminal")
	}
}

func TestErrors(t *testing.T) {
	codes := []ErrorCode{CodeArgumentInvalid, CodeIotHubUnauthorizedAccess, CodeIotHubQuotaExceeded,
		CodeDeviceMaximumQueueDepthExceeded, CodeDeviceNotFound, CodeDeviceMessageNotFound, CodeDeviceAlreadyExists,
		CodePreconditionFailed, CodeDeviceMessageLockLost, CodeMessageTooLarge, CodeThrottlingException,
		CodeServerError, CodeServiceUnavailable}
	for _, c := range codes {
		if strings.HasPrefix(c.Name(), "ErrorCode") {
			t.Errorf("%d has no name", int(c))
		}
		if back, ok := ErrorCodeByName(c.Name()); !ok || back != c {
			t.Errorf("ErrorCodeByName(%s)", c.Name())
		}
	}
	e := &Error{Code: CodeDeviceMaximumQueueDepthExceeded, Detail: "device pi-1 has 50 messages queued"}
	r := e.Response()
	if r.Message != "ErrorCode:DeviceMaximumQueueDepthExceeded;device pi-1 has 50 messages queued" || r.Code != "DeviceMaximumQueueDepthExceeded" || e.Code.HTTPStatus() != 403 {
		t.Fatalf("%+v", r)
	}
	body, _ := json.Marshal(r)
	back := ParseErrorResponse(403, body)
	if *back != *e || !errors.Is(back, &Error{Code: CodeDeviceMaximumQueueDepthExceeded}) || errors.Is(back, &Error{Code: CodeDeviceNotFound}) {
		t.Fatalf("%+v", back)
	}
	// Azure's own body: only Message.
	az := ParseErrorResponse(404, []byte(`{"Message":"ErrorCode:DeviceNotFound;E2E device not registered","ExceptionMessage":"Tracking ID:x"}`))
	if az.Code != CodeDeviceNotFound || az.Detail != "E2E device not registered" {
		t.Fatalf("%+v", az)
	}
	if p := ParseErrorResponse(502, []byte("bad gateway")); p.Code.HTTPStatus() != 502 || p.Detail != "bad gateway" {
		t.Fatalf("%+v", p)
	}
	if CodeDeviceNotFound.String() != "404001 DeviceNotFound" {
		t.Fatal(CodeDeviceNotFound.String())
	}
}
