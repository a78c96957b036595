package server_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

type twinJSON struct {
	DeviceID         string         `json:"deviceId"`
	ETag             string         `json:"etag"`
	Version          int64          `json:"version"`
	Status           string         `json:"status"`
	ConnectionState  string         `json:"connectionState"`
	LastActivityTime string         `json:"lastActivityTime"`
	Tags             map[string]any `json:"tags"`
	Properties       struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	} `json:"properties"`
}

func (h *itHub) twin(t *testing.T, id string) (twinJSON, raw) {
	t.Helper()
	r := h.do("GET", "/twins/"+id+"?api-version=2021-04-12", "registryRead", "")
	var tw twinJSON
	if r.code != 200 || json.Unmarshal(r.body, &tw) != nil {
		t.Fatalf("GET twin: %d %s", r.code, r.body)
	}
	if r.header.Get("ETag") != `"`+tw.ETag+`"` {
		t.Fatalf("ETag header %q, body etag %q", r.header.Get("ETag"), tw.ETag)
	}
	return tw, r
}

var twinRes = regexp.MustCompile(`^\$iothub/twin/res/(\d+)/\?\$rid=([^&]+)(?:&\$version=(\d+))?$`)

// TestTwins: the service side (GET/PATCH/PUT /twins/{id} with etags, tags, desired with $metadata
// and $version) and the device side over MQTT (GET, reported PATCH answered 204 with the new
// $version, desired changes pushed to a subscribed device, errors with a JSON errorCode body), all
// durable and agreeing with the registry.
func TestTwins(t *testing.T) {
	h := newITHub(t, nil)
	pi := h.device("pi-1")

	tw, _ := h.twin(t, "pi-1")
	if tw.DeviceID != "pi-1" || tw.Status != "enabled" || tw.ConnectionState != "Disconnected" || tw.Properties.Desired["$version"] != float64(1) ||
		tw.Properties.Reported["$version"] != float64(1) || len(tw.Tags) != 0 {
		t.Fatalf("fresh twin %+v", tw)
	}
	if code := h.do("GET", "/twins/nobody", "registryRead", "").errorCode(t, 404); code != "DeviceNotFound" {
		t.Fatal(code)
	}
	if r := h.do("PATCH", "/twins/pi-1", "service", `{"tags":{"site":"a"}}`); r.code != 401 {
		t.Fatalf("service policy may not write twins: %d", r.code)
	}

	// The device: twin responses and desired changes, as Azure's SDKs subscribe.
	dev := h.connect(pi, devOpts{})
	res := make(chan paho.Message, 16)
	desired := make(chan paho.Message, 16)
	for f, ch := range map[string]chan paho.Message{"$iothub/twin/res/#": res, "$iothub/twin/PATCH/properties/desired/#": desired} {
		ch := ch
		if st := dev.c.Subscribe(f, 0, func(_ paho.Client, m paho.Message) { ch <- m }); !st.WaitTimeout(deadline) || st.Error() != nil {
			t.Fatal(st.Error())
		}
	}
	recv := func(ch chan paho.Message) paho.Message {
		t.Helper()
		select {
		case m := <-ch:
			return m
		case <-time.After(deadline):
			t.Fatal("nothing from the hub")
		}
		return nil
	}

	r := h.do("PATCH", "/twins/pi-1", "iothubowner", `{"tags":{"site":"north"},"properties":{"desired":{"outputs":{"relay1":"on","act":"off"}}}}`)
	if r.code != 200 {
		t.Fatalf("PATCH: %d %s", r.code, r.body)
	}
	n := recv(desired)
	if n.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" || string(n.Payload()) != `{"$version":2,"outputs":{"act":"off","relay1":"on"}}` {
		t.Fatalf("desired notification %q %s", n.Topic(), n.Payload())
	}
	tw, _ = h.twin(t, "pi-1")
	md := tw.Properties.Desired["$metadata"].(map[string]any)
	relay := md["outputs"].(map[string]any)["relay1"].(map[string]any)
	if tw.Tags["site"] != "north" || tw.ConnectionState != "Connected" || relay["$lastUpdatedVersion"] != float64(2) ||
		!strings.HasSuffix(relay["$lastUpdated"].(string), "Z") {
		t.Fatalf("twin after PATCH %+v", tw)
	}

	// If-Match: a stale etag is 412; "*" (quoted, as Node's updateTwin sends it) is unconditional.
	stale := tw.ETag
	h.do("PATCH", "/twins/pi-1", "iothubowner", `{"properties":{"desired":{"outputs":{"act":null}}}}`)
	recv(desired)
	req := func(method, body, ifMatch string) raw {
		return h.doHeader(method, "/twins/pi-1", "iothubowner", body, "If-Match", ifMatch)
	}
	if code := req("PATCH", `{"tags":{"x":1}}`, `"`+stale+`"`).errorCode(t, 412); code != "PreconditionFailed" {
		t.Fatal(code)
	}
	if r := req("PATCH", `{"tags":{"x":1}}`, `"*"`); r.code != 200 {
		t.Fatalf("If-Match *: %d %s", r.code, r.body)
	}
	for _, bad := range []string{`{"properties":{"desired":{"a":[1]}}}`, `{"properties":{"reported":{"a":1}}}`, `{"tags":{"a.b":1}}`, `[`} {
		if code := h.do("PATCH", "/twins/pi-1", "iothubowner", bad).errorCode(t, 400); code != "ArgumentInvalid" {
			t.Errorf("%s: %s", bad, code)
		}
	}

	// MQTT GET (Node sends a body of one space): desired and reported with $version, no $metadata.
	dev.c.Publish("$iothub/twin/GET/?$rid=7c0e", 0, false, " ").WaitTimeout(deadline)
	g := recv(res)
	sm := twinRes.FindStringSubmatch(g.Topic())
	var body map[string]map[string]any
	if sm == nil || sm[1] != "200" || sm[2] != "7c0e" || json.Unmarshal(g.Payload(), &body) != nil ||
		body["desired"]["$version"] != float64(3) || body["desired"]["$metadata"] != nil || body["reported"]["$version"] != float64(1) {
		t.Fatalf("GET answer %q %s", g.Topic(), g.Payload())
	}
	// Reported PATCH: 204 with the new $version; null deletes; the twin's own version goes up
	// with each.
	v0, _ := h.twin(t, "pi-1")
	dev.c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r1", 1, false, `{"outputs":{"relay1":{"state":"on"}},"tmp":1}`).WaitTimeout(deadline)
	p := recv(res)
	if sm := twinRes.FindStringSubmatch(p.Topic()); sm == nil || sm[1] != "204" || sm[2] != "r1" || sm[3] != "2" || len(p.Payload()) != 0 {
		t.Fatalf("reported answer %q %q", p.Topic(), p.Payload())
	}
	dev.c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r2", 0, false, `{"tmp":null}`).WaitTimeout(deadline)
	if sm := twinRes.FindStringSubmatch(recv(res).Topic()); sm == nil || sm[3] != "3" {
		t.Fatal("second reported patch")
	}
	// A bad patch: 400 with a JSON body naming the code (the Node SDK needs it to see an error).
	dev.c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r3", 0, false, `{"a":[1]}`).WaitTimeout(deadline)
	e := recv(res)
	if sm := twinRes.FindStringSubmatch(e.Topic()); sm == nil || sm[1] != "400" || !strings.Contains(string(e.Payload()), `"errorCode":400004`) {
		t.Fatalf("bad reported answer %q %s", e.Topic(), e.Payload())
	}
	tw, _ = h.twin(t, "pi-1")
	rep := tw.Properties.Reported
	if rep["$version"] != float64(3) || rep["tmp"] != nil || rep["outputs"].(map[string]any)["relay1"].(map[string]any)["state"] != "on" {
		t.Fatalf("reported %+v", rep)
	}
	if tw.Version != v0.Version+2 {
		t.Fatalf("twin version %d after two reported patches from %d", tw.Version, v0.Version)
	}
	if m := rep["$metadata"].(map[string]any); m["$lastUpdatedVersion"] != nil || m["outputs"] == nil {
		t.Fatalf("reported metadata %+v", m)
	}

	// PUT replaces tags and desired.
	if r := h.do("PUT", "/twins/pi-1", "iothubowner", `{"tags":{"only":"this"},"properties":{"desired":{"mode":"auto"}}}`); r.code != 200 {
		t.Fatalf("PUT %d %s", r.code, r.body)
	}
	if n := recv(desired); !strings.Contains(string(n.Payload()), `"mode":"auto"`) || strings.Contains(string(n.Payload()), "outputs") {
		t.Fatalf("PUT notification %s", n.Payload())
	}
	tw, _ = h.twin(t, "pi-1")
	if len(tw.Tags) != 1 || tw.Properties.Desired["outputs"] != nil || tw.Properties.Desired["mode"] != "auto" {
		t.Fatalf("after PUT %+v", tw)
	}
	// The registry agrees on status and connection.
	d := mustGet(t, h, "pi-1")
	if d.ConnectionState != tw.ConnectionState || string(d.Status) != tw.Status {
		t.Fatalf("registry %+v vs twin %+v", d, tw)
	}
}
