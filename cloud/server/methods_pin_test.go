package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Pins for cloud/methods found by its mutants (docs/testing.md, "cloud/methods"): a call leaves no
// waiter behind however it ends, two calls can wait for one device, the offline answer says how to
// wait, and an answer of exactly the size limit is passed through.

// TestMethodCallsLeaveNoWaiters: a call registers to be woken when its device connects; every way
// a call can end removes that registration (a leak would grow with every call and wake nobody).
func TestMethodCallsLeaveNoWaiters(t *testing.T) {
	h := newITHub(t, nil)
	on, off := h.device("on"), h.device("off")
	dev := h.connect(on, devOpts{noSub: true})
	reqs := methodDevice(t, dev)

	// Answered, with a connect timeout that was not needed.
	out := h.invoke("on", `{"methodName":"state","connectTimeoutInSeconds":30}`)
	m := nextRequest(t, reqs)
	sm := methodTopic.FindStringSubmatch(m.Topic())
	dev.c.Publish(iothub.MethodResponseTopic(200, sm[2]), 0, false, `"ok"`).WaitTimeout(deadline)
	if r := answer(t, out); r.code != 200 {
		t.Fatalf("answer %d %s", r.code, r.body)
	}
	if n := h.s.Methods().Waiting("on"); n != 0 {
		t.Errorf("after an answered call with a connect timeout: %d waiters left for the device", n)
	}

	// Offline, no connect timeout: refused at once, and the offline answer says how to wait.
	r := h.do("POST", "/twins/"+off.DeviceID+"/methods", "service", `{"methodName":"state","connectTimeoutInSeconds":0}`)
	if code := r.errorCode(t, 404); code != "DeviceNotOnline" || !strings.Contains(string(r.body), "connectTimeoutInSeconds waits for it") {
		t.Fatalf("offline device, connect timeout 0: %s", r.body)
	}
	if n := h.s.Methods().Waiting("off"); n != 0 {
		t.Errorf("after a refused call to an offline device: %d waiters left", n)
	}

	// Unknown, with a connect timeout: 404001 at once, nothing left waiting.
	if code := h.do("POST", "/twins/nobody/methods", "service", `{"methodName":"state","connectTimeoutInSeconds":30}`).errorCode(t, 404); code != "DeviceNotFound" {
		t.Fatalf("unknown device: %s", code)
	}
	if n := h.s.Methods().Waiting("nobody"); n != 0 {
		t.Errorf("after a call to an unknown device: %d waiters left", n)
	}
}

// TestMethodCallsWaitingForOneDevice: two calls wait for the same device to connect; the first one's
// caller gives up, and the second is still delivered once the device connects.
func TestMethodCallsWaitingForOneDevice(t *testing.T) {
	h := newITHub(t, nil)
	late := h.device("late2")
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	wait := 30
	go func() {
		_, err := h.owner.InvokeMethod(ctx, "late2", iothub.MethodRequest{MethodName: "first", ConnectTimeoutInSeconds: &wait})
		first <- err
	}()
	waitFor(t, "the first call to wait", func() bool { return h.s.Methods().Waiting("late2") == 1 })
	second := h.invoke("late2", `{"methodName":"second","connectTimeoutInSeconds":30}`)
	waitFor(t, "both calls to wait", func() bool { return h.s.Methods().Waiting("late2") == 2 })

	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled call: %v", err)
	}
	waitFor(t, "the cancelled call's waiter to go", func() bool { return h.s.Methods().Waiting("late2") == 1 })

	dev := h.connect(late, devOpts{noSub: true})
	reqs := methodDevice(t, dev)
	m := nextRequest(t, reqs)
	sm := methodTopic.FindStringSubmatch(m.Topic())
	if sm == nil || sm[1] != "second" {
		t.Fatalf("request %q; want the call still waiting (second)", m.Topic())
	}
	dev.c.Publish(iothub.MethodResponseTopic(200, sm[2]), 0, false, `"here"`).WaitTimeout(deadline)
	if r := answer(t, second); r.code != 200 || strings.TrimSpace(string(r.body)) != `{"status":200,"payload":"here"}` {
		t.Fatalf("the second call's answer %d %s", r.code, r.body)
	}
	select {
	case m := <-reqs:
		t.Fatalf("the cancelled call reached the device: %q", m.Topic())
	default:
	}
}

// TestMethodAnswerAtTheLimit: an answer of exactly MaxMethodPayload bytes is the device's answer;
// only a larger one becomes the hub's 500.
func TestMethodAnswerAtTheLimit(t *testing.T) {
	h := newITHub(t, nil)
	dev := h.connect(h.device("big"), devOpts{noSub: true})
	reqs := methodDevice(t, dev)
	payload := `"` + strings.Repeat("x", iothub.MaxMethodPayload-2) + `"`
	out := h.invoke("big", `{"methodName":"dump"}`)
	m := nextRequest(t, reqs)
	sm := methodTopic.FindStringSubmatch(m.Topic())
	dev.c.Publish(iothub.MethodResponseTopic(201, sm[2]), 0, false, payload).WaitTimeout(deadline)
	r := answer(t, out)
	if want := `{"status":201,"payload":` + payload + `}`; r.code != 200 || strings.TrimSpace(string(r.body)) != want {
		t.Fatalf("answer of %d bytes: %d, %d bytes: %.80s", len(payload), r.code, len(r.body), r.body)
	}
}
