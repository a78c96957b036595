package server_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// methodDevice subscribes d to direct methods; requests arrive on the returned channel.
func methodDevice(t *testing.T, d *itDevice) chan paho.Message {
	t.Helper()
	reqs := make(chan paho.Message, 16)
	st := d.c.Subscribe("$iothub/methods/POST/#", 0, func(_ paho.Client, m paho.Message) { reqs <- m })
	if !st.WaitTimeout(deadline) || st.Error() != nil {
		t.Fatalf("%s: subscribe to methods: %v", d.id, st.Error())
	}
	return reqs
}

func nextRequest(t *testing.T, reqs chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-reqs:
		return m
	case <-time.After(deadline):
		t.Fatalf("no method request within %v", deadline)
	}
	return nil
}

var methodTopic = regexp.MustCompile(`^\$iothub/methods/POST/([^/]+)/\?\$rid=([0-9a-f]+)$`)

// invoke posts a method call as Azure's service SDKs do and returns the raw answer.
func (h *itHub) invoke(id, body string) chan raw {
	out := make(chan raw, 1)
	go func() { out <- h.do("POST", "/twins/"+id+"/methods?api-version=2021-04-12", "service", body) }()
	return out
}

func answer(t *testing.T, out chan raw) raw {
	t.Helper()
	select {
	case r := <-out:
		return r
	case <-time.After(2 * deadline):
		t.Fatal("no answer to the method call")
	}
	return raw{}
}

// TestDirectMethods checks POST /twins/{id}/methods against real MQTT devices (paho): the request
// on Azure's topic with a hex $rid and a JSON null body when the payload is omitted, the device's
// status and payload as the answer, Azure's errors (404001, 404103 with its name in the
// iothub-errorcode header, 504101 when the device stays silent, 400004 out of range), waiting
// for a device to connect, and that no device can answer another's call.
func TestDirectMethods(t *testing.T) {
	h := newITHub(t, nil)
	silentDev, pi, other, late := h.device("silent"), h.device("pi-1"), h.device("other"), h.device("late")

	// The timeout case takes Azure's minimum 5 s: start it first and check it last.
	silent := h.connect(silentDev, devOpts{noSub: true})
	silentReqs := methodDevice(t, silent)
	timedOut := h.invoke("silent", `{"methodName":"hang","responseTimeoutInSeconds":5}`)

	if code := h.do("POST", "/twins/nobody/methods", "service", `{"methodName":"state"}`).errorCode(t, 404); code != "DeviceNotFound" {
		t.Fatalf("unknown device: %s", code)
	}
	// The registry is read only when no session takes the call: an unknown device asked to be
	// waited for still fails at once, not after the connect timeout.
	began := time.Now()
	if code := h.do("POST", "/twins/nobody/methods", "service", `{"methodName":"state","connectTimeoutInSeconds":30}`).errorCode(t, 404); code != "DeviceNotFound" {
		t.Fatalf("unknown device with a connect timeout: %s", code)
	} else if time.Since(began) > 20*time.Second {
		t.Fatalf("unknown device with a connect timeout: answered after %v, waited for it to connect", time.Since(began))
	}
	r := h.do("POST", "/twins/pi-1/methods", "service", `{"methodName":"state"}`)
	if code := r.errorCode(t, 404); code != "DeviceNotOnline" || r.header.Get("iothub-errorcode") != "DeviceNotOnline" ||
		!strings.Contains(string(r.body), `"errorCode":404103`) {
		t.Fatalf("offline device: %s %v", r.body, r.header)
	}
	if r := h.do("POST", "/twins/pi-1/methods", "registryRead", `{"methodName":"state"}`); r.code != 401 {
		t.Fatalf("registryRead may not invoke: %d %s", r.code, r.body)
	}
	for _, bad := range []string{`{"methodName":""}`, `{"methodName":"a/b"}`, `{"methodName":"x","responseTimeoutInSeconds":4}`,
		`{"methodName":"x","responseTimeoutInSeconds":301}`, `{"methodName":"x","connectTimeoutInSeconds":-1}`, `{"method":"x"}`} {
		if code := h.do("POST", "/twins/pi-1/methods", "service", bad).errorCode(t, 400); code != "ArgumentInvalid" {
			t.Fatalf("%s: %s", bad, code)
		}
	}

	// Connected but not subscribed to methods: Azure says DeviceNotOnline too.
	dev := h.connect(pi, devOpts{})
	if code := h.do("POST", "/twins/pi-1/methods", "service", `{"methodName":"state"}`).errorCode(t, 404); code != "DeviceNotOnline" {
		t.Fatalf("unsubscribed device: %s", code)
	}
	reqs := methodDevice(t, dev)

	// Node's service SDK body; payload null is sent as the JSON null.
	out := h.invoke("pi-1", `{"methodName":"state","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0,"payload":null}`)
	m := nextRequest(t, reqs)
	sm := methodTopic.FindStringSubmatch(m.Topic())
	if sm == nil || sm[1] != "state" || string(m.Payload()) != "null" || m.Qos() != 0 {
		t.Fatalf("request %q %q qos %d", m.Topic(), m.Payload(), m.Qos())
	}
	// Another device answering pi-1's $rid is not heard (the ACL lets it publish only its own answers).
	o := h.connect(other, devOpts{noSub: true})
	if tok := o.c.Publish(iothub.MethodResponseTopic(200, sm[2]), 1, false, `"forged"`); !tok.WaitTimeout(deadline) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if tok := dev.c.Publish(iothub.MethodResponseTopic(207, sm[2]), 1, false, `{"outputs":{"relay1":"on"}}`); !tok.WaitTimeout(deadline) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	r = answer(t, out)
	var res struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	if r.code != 200 || json.Unmarshal(r.body, &res) != nil || res.Status != 207 || string(res.Payload) != `{"outputs":{"relay1":"on"}}` ||
		!strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("answer %d %s", r.code, r.body)
	}

	// A payload is passed as sent; an answer with an empty body is null; $rid differs per call.
	out = h.invoke("pi-1", `{"methodName":"blink","payload":{"times":3}}`)
	m2 := nextRequest(t, reqs)
	sm2 := methodTopic.FindStringSubmatch(m2.Topic())
	if sm2 == nil || sm2[1] != "blink" || sm2[2] == sm[2] || string(m2.Payload()) != `{"times":3}` {
		t.Fatalf("request %q %q", m2.Topic(), m2.Payload())
	}
	dev.c.Publish(iothub.MethodResponseTopic(500, sm2[2]), 0, false, "").WaitTimeout(deadline)
	if r := answer(t, out); r.code != 200 || strings.TrimSpace(string(r.body)) != `{"status":500,"payload":null}` {
		t.Fatalf("answer %d %s", r.code, r.body)
	}

	// connectTimeoutInSeconds waits for the device to come online.
	out = h.invoke("late", `{"methodName":"state","connectTimeoutInSeconds":30}`)
	waitFor(t, "the call to wait for late", func() bool { return h.s.Methods().Waiting("late") == 1 })
	ld := h.connect(late, devOpts{noSub: true})
	lreqs := methodDevice(t, ld)
	lm := nextRequest(t, lreqs)
	lsm := methodTopic.FindStringSubmatch(lm.Topic())
	ld.c.Publish(iothub.MethodResponseTopic(200, lsm[2]), 0, false, `"here"`).WaitTimeout(deadline)
	if r := answer(t, out); r.code != 200 || strings.TrimSpace(string(r.body)) != `{"status":200,"payload":"here"}` {
		t.Fatalf("late answer %d %s", r.code, r.body)
	}

	// The silent device got its request and never answered: the hub ends the call at 5 s.
	nextRequest(t, silentReqs)
	r = answer(t, timedOut)
	if code := r.errorCode(t, 504); code != "GatewayTimeout" || !strings.Contains(string(r.body), "504101") {
		t.Fatalf("timeout: %s", r.body)
	}
	if n := h.s.Methods().Pending(); n != 0 {
		t.Fatalf("%d calls still pending", n)
	}
}
