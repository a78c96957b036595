package server_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// clusterNodes starts two nodes (a, b) on one fresh PostgreSQL database, as a cluster is deployed:
// one CA (b gets a's DATA/tls/ca.pem and ca-key.pem before its first start), each node's service
// API on HTTPS (advertised to the other) and, for the test's own requests, on plain HTTP.
func clusterNodes(t *testing.T) (a, b *itHub) {
	t.Helper()
	url := pgtest.DB(t)
	node := func(id string, before func(c *server.Config)) *itHub {
		return newITHub(t, func(c *server.Config) {
			c.Store, c.NodeID, c.Listen.HTTPS = url, id, "127.0.0.1:0"
			if before != nil {
				before(c)
			}
		})
	}
	a = node("a", nil)
	b = node("b", func(c *server.Config) {
		dir := filepath.Join(c.DataDir, "tls")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{server.CAFile, server.CAKeyFile} {
			pem, err := os.ReadFile(filepath.Join(a.cfg.DataDir, "tls", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), pem, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	})
	return a, b
}

// TestClusterDirectMethods: a direct method invoked through node a for a board whose MQTT session
// is on node b (subscribed to its cloud-to-device topic, as c2d-agent is: that is what makes b its
// owner) is run there, over b's HTTPS API checked against the cluster's CA, and answers as
// if b had been asked: the device's status and payload unchanged, 404103 when the board is not
// connected (or not subscribed) anywhere, 404001 for an unknown device, 504101 when the board
// stays silent; a call marked as forwarded is never forwarded again; a call waiting for its
// board to connect (connectTimeoutInSeconds) finds it on the other node.
func TestClusterDirectMethods(t *testing.T) {
	a, b := clusterNodes(t)
	for _, id := range []string{"pi-1", "silent", "unsub", "offline", "late"} {
		a.device(id)
	}
	dev := func(id string) iothub.Device {
		d, err := b.owner.GetDevice(b.ctx(), id)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	st, err := a.owner.Status(a.ctx())
	if err != nil || len(st.Nodes) != 2 || st.Nodes[1].NodeID != "b" ||
		st.Nodes[1].APIURL != "https://"+b.s.Endpoints().HTTPS {
		t.Fatalf("status through a: %+v, %v; want node b advertising https://%s", st.Nodes, err, b.s.Endpoints().HTTPS)
	}

	// The timeout case takes Azure's minimum 5 s: start it first and check it last.
	silent := b.connect(dev("silent"), devOpts{})
	silentReqs := methodDevice(t, silent)
	timedOut := a.invoke("silent", `{"methodName":"hang","responseTimeoutInSeconds":5}`)

	pi := b.connect(dev("pi-1"), devOpts{})
	reqs := methodDevice(t, pi)
	out := a.invoke("pi-1", `{"methodName":"state","payload":{"verbose":true}}`)
	m := nextRequest(t, reqs)
	sm := methodTopic.FindStringSubmatch(m.Topic())
	if sm == nil || sm[1] != "state" || string(m.Payload()) != `{"verbose":true}` {
		t.Fatalf("request on b's device: %q %q", m.Topic(), m.Payload())
	}
	pi.c.Publish(iothub.MethodResponseTopic(207, sm[2]), 0, false, `{"outputs":{"relay1":"on"}}`).WaitTimeout(deadline)
	r := answer(t, out)
	var res struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	if r.code != 200 || json.Unmarshal(r.body, &res) != nil || res.Status != 207 || string(res.Payload) != `{"outputs":{"relay1":"on"}}` {
		t.Fatalf("answer through a: %d %s", r.code, r.body)
	}

	// Unknown: 404001 from a itself. Registered, never connected: 404103 at once.
	if code := a.do("POST", "/twins/nobody/methods", "service", `{"methodName":"state"}`).errorCode(t, 404); code != "DeviceNotFound" {
		t.Fatalf("unknown device through a: %s", code)
	}
	began := time.Now()
	r = a.do("POST", "/twins/offline/methods", "service", `{"methodName":"state"}`)
	if code := r.errorCode(t, 404); code != "DeviceNotOnline" || r.header.Get("iothub-errorcode") != "DeviceNotOnline" ||
		!strings.Contains(string(r.body), "404103") {
		t.Fatalf("offline device through a: %s", r.body)
	} else if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("offline device through a: answered after %v", took)
	}
	// Connected to b without the methods subscription: b's 404103, passed through.
	b.connect(dev("unsub"), devOpts{})
	if code := a.do("POST", "/twins/unsub/methods", "service", `{"methodName":"state"}`).errorCode(t, 404); code != "DeviceNotOnline" {
		t.Fatalf("unsubscribed device on b through a: %s", code)
	}

	// A call marked as forwarded is answered from a's own sessions: pi-1 is on b, so 404103, and
	// the request never reaches the board (the next one it sees is the call after it).
	r = a.doHeader("POST", "/twins/pi-1/methods", "service", `{"methodName":"looped"}`, iothub.ForwardedHeader, "b")
	if code := r.errorCode(t, 404); code != "DeviceNotOnline" {
		t.Fatalf("forwarded call through a: %s", code)
	}
	out = a.invoke("pi-1", `{"methodName":"after"}`)
	m = nextRequest(t, reqs)
	if sm = methodTopic.FindStringSubmatch(m.Topic()); sm == nil || sm[1] != "after" {
		t.Fatalf("the board saw %q: a call marked as forwarded was passed on", m.Topic())
	}
	pi.c.Publish(iothub.MethodResponseTopic(200, sm[2]), 0, false, ``).WaitTimeout(deadline)
	if r := answer(t, out); r.code != 200 || strings.TrimSpace(string(r.body)) != `{"status":200,"payload":null}` {
		t.Fatalf("answer through a: %d %s", r.code, r.body)
	}

	// Waiting for a board to connect: it connects to b, the call made through a reaches it.
	out = a.invoke("late", `{"methodName":"state","connectTimeoutInSeconds":30}`)
	waitFor(t, "the call to wait for late on a", func() bool { return a.s.Methods().Waiting("late") == 1 })
	late := b.connect(dev("late"), devOpts{})
	lreqs := methodDevice(t, late)
	lm := nextRequest(t, lreqs)
	lsm := methodTopic.FindStringSubmatch(lm.Topic())
	late.c.Publish(iothub.MethodResponseTopic(200, lsm[2]), 0, false, `"here"`).WaitTimeout(deadline)
	if r := answer(t, out); r.code != 200 || strings.TrimSpace(string(r.body)) != `{"status":200,"payload":"here"}` {
		t.Fatalf("late board's answer through a: %d %s", r.code, r.body)
	}

	// The silent board got its request on b and never answered: 504101 through a.
	nextRequest(t, silentReqs)
	r = answer(t, timedOut)
	if code := r.errorCode(t, 504); code != "GatewayTimeout" || !strings.Contains(string(r.body), "504101") {
		t.Fatalf("timeout through a: %s", r.body)
	}
	if n, m := a.s.Methods().Pending(), b.s.Methods().Pending(); n != 0 || m != 0 {
		t.Fatalf("calls still pending: %d on a, %d on b", n, m)
	}
}

// TestClusterDesiredChanges: a twin desired change made through node a reaches the board whose
// session is on node b at once, as Azure's notification (the patch with its $version); one too
// large to relay in a wake-up arrives as the whole desired section, read from the store by b.
func TestClusterDesiredChanges(t *testing.T) {
	a, b := clusterNodes(t)
	a.device("pi-1")
	d, err := b.owner.GetDevice(b.ctx(), "pi-1")
	if err != nil {
		t.Fatal(err)
	}
	pi := b.connect(d, devOpts{})
	desired := make(chan paho.Message, 16)
	if st := pi.c.Subscribe("$iothub/twin/PATCH/properties/desired/#", 0, func(_ paho.Client, m paho.Message) { desired <- m }); !st.WaitTimeout(deadline) || st.Error() != nil {
		t.Fatal(st.Error())
	}
	recv := func() paho.Message {
		t.Helper()
		select {
		case m := <-desired:
			return m
		case <-time.After(deadline):
			t.Fatal("no desired-change notification on b's board")
		}
		return nil
	}

	sent := time.Now()
	if r := a.do("PATCH", "/twins/pi-1", "iothubowner", `{"properties":{"desired":{"outputs":{"relay1":"on"}}}}`); r.code != 200 {
		t.Fatalf("PATCH through a: %d %s", r.code, r.body)
	}
	n := recv()
	t.Logf("desired change through a → board on b: %v", time.Since(sent))
	if n.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" || string(n.Payload()) != `{"$version":2,"outputs":{"relay1":"on"}}` {
		t.Fatalf("notification %q %s", n.Topic(), n.Payload())
	}

	big := strings.Repeat("x", 4000)
	if r := a.do("PATCH", "/twins/pi-1", "iothubowner", `{"properties":{"desired":{"note":"`+big+`"}}}`); r.code != 200 {
		t.Fatalf("large PATCH through a: %d %s", r.code, r.body)
	}
	n = recv()
	var body map[string]any
	if n.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=3" || json.Unmarshal(n.Payload(), &body) != nil ||
		body["note"] != big || body["$version"] != float64(3) || body["outputs"] == nil {
		t.Fatalf("large change: %q %.200s", n.Topic(), n.Payload())
	}
}
