package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// barrier is a SUBSCRIBE round trip. paho sends acknowledgements and SUBSCRIBEs through the same
// ordered priority queue and the broker handles one client's packets in order, so once this
// returns, every PUBACK the client sent before it (msg.Ack()) has been processed by the broker.
func (cl *client) barrier() {
	cl.t.Helper()
	if g := cl.subscribe("$iothub/twin/res/#", 0); g != 0 {
		cl.t.Fatalf("barrier subscribe granted 0x%02x", g)
	}
}

func TestConnectAuthentication(t *testing.T) {
	var mu sync.Mutex
	var failed []string
	e := newEnv(t, envOpt{opts: func(o *broker.Options) {
		o.Events.AuthFailed = func(clientID string, err error) {
			mu.Lock()
			failed = append(failed, clientID)
			mu.Unlock()
		}
	}})
	good := e.device("good")
	other := e.device("other")
	off := e.device("off")
	e.setStatus(off, iothub.DeviceDisabled)
	ghost := iothub.Device{DeviceID: "ghost"}
	ghost.Authentication.SymmetricKey.PrimaryKey = other.Authentication.SymmetricKey.PrimaryKey

	policyToken := func(name string) string {
		p, ok := e.hub.Policy(name)
		if !ok {
			t.Fatalf("no %s policy", name)
		}
		tok, err := iothub.ServiceConnectionString{HostName: testHost, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}.Token(time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	for _, tc := range []struct {
		name string
		dev  iothub.Device
		o    clientOpts
		want error // nil: accepted
	}{
		{"device key", good, clientOpts{}, nil},
		{"secondary key", good, clientOpts{password: token(t, good, good.Authentication.SymmetricKey.SecondaryKey, time.Hour)}, nil},
		{"username without ?", good, clientOpts{username: testHost + "/good/api-version=2016-11-14&DeviceClientType=azure-iot-device%2F1.0"}, nil},
		{"bare username", good, clientOpts{username: testHost + "/good/"}, nil},
		{"username with model-id", good, clientOpts{username: testHost + "/good/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.0&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"}, nil},
		{"extension opt-in", good, clientOpts{extension: true}, nil},
		{"device policy token", good, clientOpts{password: policyToken("device")}, nil},
		{"service policy token", good, clientOpts{password: policyToken("service")}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"garbage token", good, clientOpts{password: "SharedAccessSignature nonsense"}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"expired token", good, clientOpts{password: expiredToken(t, good)}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"another device's key", good, clientOpts{password: token(t, good, other.Authentication.SymmetricKey.PrimaryKey, time.Hour)}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"client id of another device", good, clientOpts{clientID: "other"}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"wrong host in username", good, clientOpts{username: "elsewhere.example/good/?api-version=2021-04-12"}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"disabled device", off, clientOpts{}, pahopackets.ErrorRefusedNotAuthorised},
		{"unknown device", ghost, clientOpts{}, pahopackets.ErrorRefusedBadUsernameOrPassword}, // as a wrong key: no id enumeration
		{"unknown device, garbage token", ghost, clientOpts{password: "SharedAccessSignature nonsense"}, pahopackets.ErrorRefusedBadUsernameOrPassword},
		{"disabled device, wrong key", off, clientOpts{password: token(t, off, other.Authentication.SymmetricKey.PrimaryKey, time.Hour)}, pahopackets.ErrorRefusedBadUsernameOrPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := e.dial(tc.dev, tc.o)
			err := cl.tok.Error()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CONNECT refused: %v", err)
				}
				cl.subscribeC2D(tc.dev.DeviceID)
				cl.c.Disconnect(0)
				eventually(t, "session gone", func() bool { return e.b.Connected() == 0 })
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CONNECT: got %v, want %v", err, tc.want)
			}
			if e.b.Connected() != 0 {
				t.Fatalf("Connected() = %d after a refused CONNECT", e.b.Connected())
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 10 {
		t.Errorf("AuthFailed called for %q, want 10 refusals", failed)
	}
	if strings.Contains(e.logs.String(), "sig=") {
		t.Errorf("a SAS token reached the log:\n%s", e.logs.String())
	}
}

func TestTokenExpiryDisconnects(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("short")
	cl := e.connect(d, clientOpts{password: token(t, d, "", 2*time.Second)})
	cl.subscribeC2D("short")
	start := time.Now()
	cl.waitLost()
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("disconnected %v after subscribing, token lived 2 s", el)
	}
	eventually(t, "session gone", func() bool { return e.b.Connected() == 0 })
	if !strings.Contains(e.logs.String(), "SAS token expired") {
		t.Errorf("expiry not logged")
	}
}

func TestDeliverAndCompleteOnPuback(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-1")
	cl := e.connect(d, clientOpts{})
	cl.subscribeC2D("pi-1")

	props := []iothub.AppProperty{{Name: "output", Value: "led1"}, {Name: "state", Value: "50%+fast"}}
	res := e.send("pi-1", iothub.SendRequest{
		CorrelationID: "corr-7", Ack: iothub.AckFull, Properties: props, Body: []byte("hello"),
		ContentType: "text/plain",
	})
	m, msg := cl.next()
	dev, _, err := iothub.ParseDeviceBoundTopic(m.Topic())
	if err != nil || dev != "pi-1" {
		t.Fatalf("topic %q: device %q, %v", m.Topic(), dev, err)
	}
	if msg.MessageID != res.MessageID || msg.CorrelationID != "corr-7" || msg.Ack != iothub.AckFull || msg.ContentType != "text/plain" {
		t.Errorf("system properties: %+v", msg)
	}
	if len(msg.Properties) != 2 || msg.Properties[0] != props[0] || msg.Properties[1] != props[1] {
		t.Errorf("application properties: got %+v, want %+v", msg.Properties, props)
	}
	if msg.LockToken != "" {
		t.Errorf("a device without the extension got a lock token %q", msg.LockToken)
	}
	if string(m.Payload()) != "hello" || m.Qos() != 1 {
		t.Errorf("payload %q qos %d", m.Payload(), m.Qos())
	}
	st := e.settled("pi-1", res.MessageID)
	if st.Outcome != iothub.StatusSuccess || st.State != iothub.StateCompleted || st.DeliveryCount != 1 {
		t.Errorf("after PUBACK: %+v", st)
	}
}

// A device in Azure's dialect cannot reject over MQTT; c2d-agent then reports the refusal as a D2C
// event before its PUBACK (docs/protocol.md §7). c2d-hub records what happened: Rejected, with
// the reason, and the PUBACK that follows changes nothing. A report after the PUBACK is too late.
func TestRejectReportBeforePubackRejects(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-az")
	cl := e.connect(d, clientOpts{manualAck: true})
	cl.subscribeC2D("pi-az")
	refused := e.send("pi-az", iothub.SendRequest{Ack: iothub.AckFull})
	later := e.send("pi-az", iothub.SendRequest{Ack: iothub.AckFull})

	m1, msg1 := cl.next()
	topic, payload := iothub.RejectReportEvent("pi-az", msg1.MessageID, `unknown target "relay9"`)
	if err := cl.publish(topic, 1, payload); err != nil {
		t.Fatal(err)
	}
	m1.Ack()
	st := e.settled("pi-az", refused.MessageID)
	if st.Outcome != iothub.StatusRejected || st.Reason != `unknown target "relay9"` || st.DeliveryCount != 1 {
		t.Fatalf("reported before its PUBACK: %+v", st)
	}

	m2, msg2 := cl.next()
	m2.Ack()
	if st := e.settled("pi-az", later.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("second message: %+v", st)
	}
	topic, payload = iothub.RejectReportEvent("pi-az", msg2.MessageID, "too late")
	if err := cl.publish(topic, 1, payload); err != nil {
		t.Fatal(err)
	}
	cl.barrier()
	if st := e.status("pi-az", later.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("a report after the PUBACK changed the outcome: %+v", st)
	}
}

func TestPubacksInAnyOrder(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-2")
	cl := e.connect(d, clientOpts{manualAck: true})
	cl.subscribeC2D("pi-2")
	r1 := e.send("pi-2", iothub.SendRequest{Body: []byte("1")})
	r2 := e.send("pi-2", iothub.SendRequest{Body: []byte("2")})
	m1, _ := cl.next()
	m2, _ := cl.next()
	if string(m1.Payload()) != "1" || string(m2.Payload()) != "2" {
		t.Fatalf("FIFO: got %q then %q", m1.Payload(), m2.Payload())
	}
	// The device's own QoS 1 publish takes the next free id on its side (2, after SUBSCRIBE's 1):
	// the same id as the second delivery, outstanding. Inbound and outbound ids are separate
	// spaces; the delivery must still complete on its PUBACK (mochi's shared inflight map would
	// lose it).
	if err := cl.publish(iothub.EventsTopic("pi-2", nil), 1, []byte("telemetry")); err != nil {
		t.Fatal(err)
	}
	m2.Ack()
	cl.barrier()
	if st := e.status("pi-2", r2.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("second message after its PUBACK: %+v", st)
	}
	if st := e.status("pi-2", r1.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("first message, not yet acknowledged: %+v", st)
	}
	m1.Ack()
	if st := e.settled("pi-2", r1.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("first message: %+v", st)
	}
}

func TestExtensionRejectWithReason(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-x")
	cl := e.connect(d, clientOpts{extension: true, manualAck: true})
	cl.subscribeC2D("pi-x")
	res := e.send("pi-x", iothub.SendRequest{Ack: iothub.AckFull, Body: []byte("blink")})
	m, msg := cl.next()
	if msg.LockToken == "" {
		t.Fatalf("extension connection got no %s in %q", iothub.LockTokenProperty, m.Topic())
	}
	m.Ack()
	cl.barrier()
	if st := e.status("pi-x", res.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("PUBACK of an extension connection settled the message: %+v", st)
	}
	body, _ := json.Marshal(iothub.DispositionBody{Reason: "pin GPIO99 not declared"})
	if err := cl.publish(iothub.DispositionTopic("pi-x", msg.LockToken, iothub.DispositionReject), 1, body); err != nil {
		t.Fatalf("publish reject: %v", err)
	}
	// The disposition is settled before its PUBACK: no waiting needed.
	st := e.status("pi-x", res.MessageID)
	if st.Outcome != iothub.StatusRejected || st.Reason != "pin GPIO99 not declared" || st.State != iothub.StateDeadLettered {
		t.Fatalf("after reject: %+v", st)
	}
}

func TestExtensionAbandonRedelivers(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-a")
	cl := e.connect(d, clientOpts{extension: true})
	cl.subscribeC2D("pi-a")
	res := e.send("pi-a", iothub.SendRequest{Body: []byte("x")})
	_, first := cl.next()
	if err := cl.publish(iothub.DispositionTopic("pi-a", first.LockToken, iothub.DispositionAbandon), 1, nil); err != nil {
		t.Fatalf("publish abandon: %v", err)
	}
	_, again := cl.next()
	if again.MessageID != res.MessageID || again.LockToken == first.LockToken || again.LockToken == "" {
		t.Fatalf("redelivery: mid %q lock %q (first lock %q)", again.MessageID, again.LockToken, first.LockToken)
	}
	if st := e.status("pi-a", res.MessageID); st.DeliveryCount != 2 || st.State != iothub.StateInvisible {
		t.Fatalf("after redelivery: %+v", st)
	}
	// A disposition with the stale lock token changes nothing.
	if err := cl.publish(iothub.DispositionTopic("pi-a", first.LockToken, iothub.DispositionReject), 1, nil); err != nil {
		t.Fatalf("publish stale reject: %v", err)
	}
	if st := e.status("pi-a", res.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("stale lock token settled the message: %+v", st)
	}
	if err := cl.publish(iothub.DispositionTopic("pi-a", again.LockToken, iothub.DispositionComplete), 1, nil); err != nil {
		t.Fatalf("publish complete: %v", err)
	}
	if st := e.status("pi-a", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("after complete: %+v", st)
	}
}

func TestMalformedDispositionsAreDropped(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-m")
	cl := e.connect(d, clientOpts{extension: true})
	cl.subscribeC2D("pi-m")
	res := e.send("pi-m", iothub.SendRequest{Body: []byte("x")})
	_, msg := cl.next()
	for _, p := range []struct{ topic, body string }{
		{"$c2d/devices/pi-m/messages/devicebound/" + msg.LockToken + "/explode", ""},
		{"$c2d/devices/pi-m/messages/devicebound/" + msg.LockToken, ""},
		{"$c2d/devices/pi-m/messages/devicebound/" + msg.LockToken + "/reject/extra", ""},
		{iothub.DispositionTopic("pi-m", msg.LockToken, iothub.DispositionReject), "{not json"},
	} {
		if err := cl.publish(p.topic, 1, []byte(p.body)); err != nil {
			t.Fatalf("publish %q: %v", p.topic, err)
		}
	}
	if st := e.status("pi-m", res.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("a malformed disposition settled the message: %+v", st)
	}
	if err := cl.publish(iothub.DispositionTopic("pi-m", msg.LockToken, iothub.DispositionComplete), 1, nil); err != nil {
		t.Fatalf("publish complete: %v", err)
	}
	if st := e.status("pi-m", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("after complete: %+v", st)
	}
	if !strings.Contains(e.logs.String(), "dropping malformed disposition") {
		t.Errorf("malformed disposition not logged")
	}
}

func TestLockExpiryRedelivers(t *testing.T) {
	e := newEnv(t, envOpt{cfg: hub.Config{LockTimeout: 1500 * time.Millisecond}})
	d := e.device("pi-l")
	cl := e.connect(d, clientOpts{manualAck: true})
	cl.subscribeC2D("pi-l")
	res := e.send("pi-l", iothub.SendRequest{Body: []byte("slow")})
	m1, first := cl.next()
	m2, second := cl.next() // the lock expired without a PUBACK
	if second.MessageID != first.MessageID || first.MessageID != res.MessageID {
		t.Fatalf("redelivered %q, first %q, sent %q", second.MessageID, first.MessageID, res.MessageID)
	}
	if st := e.status("pi-l", res.MessageID); st.DeliveryCount != 2 || st.State != iothub.StateInvisible {
		t.Fatalf("after the redelivery: %+v", st)
	}
	m1.Ack() // the stale delivery's PUBACK: its lock is gone
	cl.barrier()
	if st := e.status("pi-l", res.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("a stale PUBACK settled the redelivered message: %+v", st)
	}
	m2.Ack()
	if st := e.settled("pi-l", res.MessageID); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 2 {
		t.Fatalf("after PUBACK of the redelivery: %+v", st)
	}
}

func TestOfflineMessageDeliveredOnConnect(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-o")
	res := e.send("pi-o", iothub.SendRequest{Body: []byte("while you were away")})
	cl := e.connect(d, clientOpts{clean: true})
	cl.subscribeC2D("pi-o")
	_, msg := cl.next()
	if msg.MessageID != res.MessageID {
		t.Fatalf("got %q, want %q", msg.MessageID, res.MessageID)
	}
	if st := e.settled("pi-o", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
}

func TestPersistentSessionResumesWithoutResubscribe(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-p")
	c1 := e.connect(d, clientOpts{})
	c1.subscribeC2D("pi-p")
	c1.c.Disconnect(100)
	eventually(t, "first session gone", func() bool { return e.b.Connected() == 0 })

	res := e.send("pi-p", iothub.SendRequest{Body: []byte("resume")})
	c2 := e.connect(d, clientOpts{}) // CleanSession=0, no SUBSCRIBE
	if !c2.tok.(interface{ SessionPresent() bool }).SessionPresent() {
		t.Errorf("CONNACK session present = false for a resumed session")
	}
	_, msg := c2.next()
	if msg.MessageID != res.MessageID {
		t.Fatalf("got %q, want %q", msg.MessageID, res.MessageID)
	}
	if st := e.settled("pi-p", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
	// What our agent does: subscribe again on every connection. Still exactly one delivery.
	c2.subscribeC2D("pi-p")
	r2 := e.send("pi-p", iothub.SendRequest{Body: []byte("once")})
	if _, msg := c2.next(); msg.MessageID != r2.MessageID {
		t.Fatalf("got %q, want %q", msg.MessageID, r2.MessageID)
	}
	if st := e.settled("pi-p", r2.MessageID); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
		t.Fatalf("%+v", st)
	}
	c2.barrier()
	c2.none(50 * time.Millisecond)
}

func TestCleanSessionDoesNotInheritSubscription(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-c")
	c1 := e.connect(d, clientOpts{})
	c1.subscribeC2D("pi-c")
	c1.c.Disconnect(100)
	eventually(t, "first session gone", func() bool { return e.b.Connected() == 0 })
	res := e.send("pi-c", iothub.SendRequest{Body: []byte("x")})
	c2 := e.connect(d, clientOpts{clean: true})
	c2.barrier() // the session is established and idle
	if st := e.status("pi-c", res.MessageID); st.State != iothub.StateEnqueued || st.DeliveryCount != 0 {
		t.Fatalf("delivered to a clean session that did not subscribe: %+v", st)
	}
	c2.subscribeC2D("pi-c")
	if _, msg := c2.next(); msg.MessageID != res.MessageID {
		t.Fatalf("got %q", msg.MessageID)
	}
}

func TestSessionTakeover(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-t")
	c1 := e.connect(d, clientOpts{manualAck: true})
	c1.subscribeC2D("pi-t")
	r1 := e.send("pi-t", iothub.SendRequest{Body: []byte("in flight at takeover")})
	c1.next() // Invisible, never acknowledged

	c2 := e.connect(d, clientOpts{}) // same client id, persistent: inherits the subscription
	c1.waitLost()
	_, again := c2.next() // Detach(old) returned it to the queue, Attach(new) delivered it
	if again.MessageID != r1.MessageID {
		t.Fatalf("new session got %q, want %q", again.MessageID, r1.MessageID)
	}
	if st := e.settled("pi-t", r1.MessageID); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 2 {
		t.Fatalf("%+v", st)
	}
	r2 := e.send("pi-t", iothub.SendRequest{Body: []byte("after takeover")})
	if _, msg := c2.next(); msg.MessageID != r2.MessageID {
		t.Fatalf("got %q, want %q", msg.MessageID, r2.MessageID)
	}
	if st := e.settled("pi-t", r2.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
	eventually(t, "one session", func() bool { return e.b.Connected() == 1 })
}

func TestIsolation(t *testing.T) {
	e := newEnv(t, envOpt{})
	a := e.device("dev-a")
	b := e.device("dev-b")
	cb := e.connect(b, clientOpts{extension: true})
	cb.subscribeC2D("dev-b")
	ca := e.connect(a, clientOpts{extension: true})

	for _, f := range []string{
		iothub.DeviceBoundFilter("dev-b"),
		"devices/+/messages/devicebound/#",
		"devices/#",
		"#",
		"$c2d/devices/dev-b/messages/devicebound/#",
		"devices/dev-b/messages/events/#",
		"$SYS/#",
	} {
		if g := ca.subscribe(f, 1); g != 0x80 {
			t.Errorf("device A subscribing to %q: granted 0x%02x, want 0x80", f, g)
		}
	}
	for _, f := range []string{"$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#", "$c2d/devices/dev-a/messages/devicebound/#"} {
		if g := ca.subscribe(f, 1); g != 1 {
			t.Errorf("device A subscribing to %q: granted 0x%02x, want 1", f, g)
		}
	}
	ca.subscribeC2D("dev-a")

	res := e.send("dev-b", iothub.SendRequest{Body: []byte("for b only")})
	_, msg := cb.next()
	if msg.MessageID != res.MessageID {
		t.Fatalf("b got %q", msg.MessageID)
	}

	// A settling B's message with B's lock token: the publish is refused and, MQTT 3.1.1 having
	// no negative PUBACK, A's connection is closed.
	ca.c.Publish(iothub.DispositionTopic("dev-b", msg.LockToken, iothub.DispositionReject), 1, false, []byte(`{"reason":"hijack"}`))
	ca.waitLost()
	if st := e.status("dev-b", res.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("device A settled device B's message: %+v", st)
	}

	// A publishing B's telemetry: refused the same way.
	ca = e.connect(a, clientOpts{})
	ca.c.Publish(iothub.EventsTopic("dev-b", nil), 1, false, []byte("spoof"))
	ca.waitLost()

	// B is unaffected throughout.
	if err := cb.publish(iothub.DispositionTopic("dev-b", msg.LockToken, iothub.DispositionComplete), 1, nil); err != nil {
		t.Fatalf("b complete: %v", err)
	}
	if st := e.status("dev-b", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
	cb.none(100 * time.Millisecond)
}

func TestNonExtensionDeviceCannotPublishDispositions(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("plain")
	cl := e.connect(d, clientOpts{manualAck: true})
	cl.subscribeC2D("plain")
	res := e.send("plain", iothub.SendRequest{Body: []byte("x")})
	cl.next()
	cl.c.Publish(iothub.DispositionTopic("plain", "whatever", iothub.DispositionReject), 1, false, []byte{})
	cl.waitLost()
	eventually(t, "requeued on disconnect", func() bool {
		return e.status("plain", res.MessageID).State == iothub.StateEnqueued
	})
}

func TestQoS2(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("q2")
	cl := e.connect(d, clientOpts{})
	if g := cl.subscribe(iothub.DeviceBoundFilter("q2"), 2); g != 1 {
		t.Fatalf("QoS 2 subscription granted 0x%02x, want 1", g)
	}
	cl.c.Publish(iothub.EventsTopic("q2", nil), 2, false, []byte("qos2"))
	cl.waitLost()
}

func TestEventsAcceptedAndRejectReportsLogged(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("rep")
	cl := e.connect(d, clientOpts{})
	if err := cl.publish(iothub.EventsTopic("rep", iothub.PropertyBag{{Name: "temp", Value: "21"}}), 1, []byte("{}")); err != nil {
		t.Fatalf("telemetry: %v", err)
	}
	// What an Azure SDK sends when the application asks for its twin: accepted and dropped.
	if err := cl.publish("$iothub/twin/GET/?$rid=1", 1, nil); err != nil {
		t.Fatalf("twin request: %v", err)
	}
	topic, payload := iothub.RejectReportEvent("rep", "cmd:42", "pin GPIO99 not declared")
	if err := cl.publish(topic, 1, payload); err != nil {
		t.Fatalf("reject report: %v", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "original_message_id=cmd:42") || !strings.Contains(logs, `reason="pin GPIO99 not declared"`) {
		t.Errorf("reject report not logged with id and reason:\n%s", logs)
	}
}

func TestDisabledDeviceIsDropped(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("soon-off")
	cl := e.connect(d, clientOpts{})
	cl.subscribeC2D("soon-off")
	e.setStatus(d, iothub.DeviceDisabled)
	cl.waitLost()
	again := e.dial(d, clientOpts{})
	if err := again.tok.Error(); !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
		t.Fatalf("reconnect of a disabled device: %v", err)
	}
}

func TestCloseReturnsInFlightMessages(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-z")
	cl := e.connect(d, clientOpts{manualAck: true})
	cl.subscribeC2D("pi-z")
	res := e.send("pi-z", iothub.SendRequest{Body: []byte("x")})
	cl.next()
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	cl.waitLost()
	if n := e.b.Connected(); n != 0 {
		t.Errorf("Connected() = %d after Close", n)
	}
	if st := e.status("pi-z", res.MessageID); st.State != iothub.StateEnqueued {
		t.Errorf("in-flight message after Close: %+v", st)
	}
	if err := e.b.Start(); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestTLSAndWebSockets(t *testing.T) {
	srvTLS, cliTLS := selfSigned(t)
	e := newEnv(t, envOpt{opts: func(o *broker.Options) {
		o.MQTTAddr = ""
		o.MQTTSAddr, o.WSAddr, o.WSSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		o.TLS = srvTLS
	}})
	if e.b.Addr(broker.ListenerMQTT) != "" {
		t.Errorf("plain listener is on")
	}
	d := e.device("tls-dev")
	for _, u := range []string{
		"ssl://" + e.b.Addr(broker.ListenerMQTTS),
		"ws://" + e.b.Addr(broker.ListenerWS) + broker.WebSocketPath,
		"wss://" + e.b.Addr(broker.ListenerWSS) + broker.WebSocketPath,
	} {
		t.Run(strings.SplitN(u, ":", 2)[0], func(t *testing.T) {
			cl := e.connect(d, clientOpts{url: u, tls: cliTLS, clean: true})
			cl.subscribeC2D("tls-dev")
			res := e.send("tls-dev", iothub.SendRequest{Body: []byte(strings.Repeat("x", 60<<10))})
			m, msg := cl.next()
			if msg.MessageID != res.MessageID || len(m.Payload()) != 60<<10 {
				t.Fatalf("got %q (%d bytes)", msg.MessageID, len(m.Payload()))
			}
			if st := e.settled("tls-dev", res.MessageID); st.Outcome != iothub.StatusSuccess {
				t.Fatalf("%+v", st)
			}
			cl.c.Disconnect(0)
			eventually(t, "session gone", func() bool { return e.b.Connected() == 0 })
		})
	}
	t.Run("wrong websocket path", func(t *testing.T) {
		cl := e.dial(d, clientOpts{url: "ws://" + e.b.Addr(broker.ListenerWS) + "/mqtt", clean: true})
		if cl.tok.Error() == nil {
			t.Fatal("connected on a path other than " + broker.WebSocketPath)
		}
	})
}

func TestSilentConnectionIsClosed(t *testing.T) {
	e := newEnv(t, envOpt{opts: func(o *broker.Options) { o.ConnectTimeout = 200 * time.Millisecond }})
	c, err := net.Dial("tcp", e.b.Addr(broker.ListenerMQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read on a connection that never sent CONNECT: %v (want it closed before %v)", err, wait)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []broker.Options{
		{},
		{MQTTSAddr: ":0"},
		{WSSAddr: ":0"},
		{MQTTAddr: ":0", AuthTimeout: -1},
		{MQTTAddr: ":0", MaxConcurrentAuth: -1},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: Validate accepted it", o)
		}
	}
	if _, err := broker.New(nil, broker.Options{MQTTAddr: ":0"}); err == nil {
		t.Error("New accepted a nil core")
	}
}

func expiredToken(t *testing.T, d iothub.Device) string {
	t.Helper()
	tok, err := iothub.NewSASToken(iothub.DeviceResource(testHost, d.DeviceID, ""),
		d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestModuleGetsNoCloudToDevice(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("gw")
	dev := e.connect(d, clientOpts{})
	dev.subscribeC2D("gw")

	tok, err := iothub.NewSASToken(iothub.DeviceResource(testHost, "gw", "sensor"), d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	mod := e.connect(d, clientOpts{clientID: "gw/sensor", username: iothub.FormatUsername(testHost, "gw", "sensor", nil), password: tok})
	if g := mod.subscribe(iothub.DeviceBoundFilter("gw"), 1); g != 0x80 {
		t.Errorf("module subscribing to its device's C2D filter: granted 0x%02x", g)
	}
	if err := mod.publish("devices/gw/modules/sensor/messages/events/", 1, []byte("t=21")); err != nil {
		t.Errorf("module telemetry: %v", err)
	}
	// The module session neither replaced nor disturbed the device's.
	res := e.send("gw", iothub.SendRequest{Body: []byte("to the device")})
	if _, msg := dev.next(); msg.MessageID != res.MessageID {
		t.Fatalf("device got %q", msg.MessageID)
	}
	if st := e.settled("gw", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
	if n := e.b.Connected(); n != 2 {
		t.Errorf("Connected() = %d, want 2 (device and module)", n)
	}
}

func TestDeletedDeviceIsDroppedAndEventsReported(t *testing.T) {
	type ev struct {
		kind, device string
	}
	evs := make(chan ev, 10)
	e := newEnv(t, envOpt{opts: func(o *broker.Options) {
		o.Events.Connected = func(d, _ string) { evs <- ev{"connected", d} }
		o.Events.Disconnected = func(d, _ string, _ error) { evs <- ev{"disconnected", d} }
	}})
	d := e.device("doomed")
	cl := e.connect(d, clientOpts{})
	cl.subscribeC2D("doomed")
	if err := e.hub.DeleteDevice(context.Background(), "doomed", "*"); err != nil {
		t.Fatal(err)
	}
	cl.waitLost()
	for _, want := range []ev{{"connected", "doomed"}, {"disconnected", "doomed"}} {
		select {
		case got := <-evs:
			if got != want {
				t.Fatalf("event %+v, want %+v", got, want)
			}
		case <-time.After(wait):
			t.Fatalf("no %+v event", want)
		}
	}
	again := e.dial(d, clientOpts{})
	if err := again.tok.Error(); !errors.Is(err, pahopackets.ErrorRefusedBadUsernameOrPassword) {
		t.Fatalf("reconnect of a deleted device: %v, want bad username or password (as for any unknown id)", err)
	}
}

func TestQoS0SubscriptionCompletesOnWrite(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("q0")
	cl := e.connect(d, clientOpts{})
	if g := cl.subscribe(iothub.DeviceBoundFilter("q0"), 0); g != 0 {
		t.Fatalf("granted 0x%02x", g)
	}
	res := e.send("q0", iothub.SendRequest{Body: []byte("at most once")})
	m, msg := cl.next()
	if m.Qos() != 0 || msg.MessageID != res.MessageID {
		t.Fatalf("got %q at QoS %d; a QoS 0 subscriber must get QoS 0", msg.MessageID, m.Qos())
	}
	if st := e.settled("q0", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
}

func TestLargeEventsUpToAzureLimit(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("big")
	cl := e.connect(d, clientOpts{})
	if err := cl.publish(iothub.EventsTopic("big", nil), 1, make([]byte, 256<<10)); err != nil {
		t.Fatalf("256 KB event: %v", err)
	}
	cl.c.Publish(iothub.EventsTopic("big", nil), 1, false, make([]byte, broker.MaxPacketSize))
	cl.waitLost()
}

func TestMQTT5Refused(t *testing.T) {
	e := newEnv(t, envOpt{})
	c, err := net.Dial("tcp", e.b.Addr(broker.ListenerMQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	// CONNECT, protocol level 5, clean start, keep-alive 60, no properties, client id "x".
	if _, err := c.Write([]byte{0x10, 0x0e, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 1, 'x'}); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if ack[0] != 0x20 || ack[3] != 0x84 {
		t.Fatalf("CONNACK % x, want reason 0x84 (unsupported protocol version)", ack)
	}
}

// TestRapidTakeovers replaces a device's session again and again while its queue is being
// delivered: whatever order the old and new connections' goroutines run in, the last session must
// end up attached and every message completed.
func TestRapidTakeovers(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("flappy")
	var mids []string
	for i := range 12 {
		mids = append(mids, e.send("flappy", iothub.SendRequest{Body: []byte{byte('a' + i)}}).MessageID)
	}
	var last *client
	for i := range 8 {
		last = e.connect(d, clientOpts{})
		if i == 0 {
			last.subscribeC2D("flappy")
		}
	}
	for _, mid := range mids {
		if st := e.settled("flappy", mid); st.Outcome != iothub.StatusSuccess {
			t.Fatalf("%s: %+v", mid, st)
		}
	}
	r := e.send("flappy", iothub.SendRequest{Body: []byte("last")})
	for {
		_, msg := last.next()
		if msg.MessageID == r.MessageID {
			break
		}
	}
	eventually(t, "one session", func() bool { return e.b.Connected() == 1 })
}

// TestConcurrentConnects races several CONNECTs of one device: one session survives, attached.
func TestConcurrentConnects(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("racer")
	// A cold start (no warm-up connection): the broker bounds concurrent Authenticate calls
	// (MaxConcurrentAuth), so a burst of CONNECTs cannot exhaust the store's read pool.
	pw := token(t, d, "", time.Hour)
	clients := make([]*client, 6)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients[i] = e.start(d, clientOpts{password: pw})
		}()
	}
	wg.Wait()
	for _, c := range clients {
		if !c.tok.WaitTimeout(wait) {
			t.Fatal("no CONNACK")
		}
	}
	var live *client
	eventually(t, "one session on each side", func() bool {
		live = nil
		n := 0
		for _, c := range clients {
			if c.c.IsConnectionOpen() {
				live, n = c, n+1
			}
		}
		return n == 1 && e.b.Connected() == 1
	})
	live.subscribeC2D("racer")
	res := e.send("racer", iothub.SendRequest{Body: []byte("x")})
	if _, msg := live.next(); msg.MessageID != res.MessageID {
		t.Fatalf("got %q", msg.MessageID)
	}
	if st := e.settled("racer", res.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
}

// The largest message Azure allows (64 KB, docs/protocol.md §4) reaches the device whole through
// the session's writer, and the next one after it too (the writer stops when its queue is empty
// and starts again for the next delivery).
func TestLargestMessageDeliveredWhole(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("big-c2d")
	cl := e.connect(d, clientOpts{})
	cl.subscribeC2D("big-c2d")
	body := make([]byte, iothub.MaxMessageSize-128) // the rest is the system properties' room
	for i := range body {
		body[i] = byte(i * 7)
	}
	for round := range 3 {
		res := e.send("big-c2d", iothub.SendRequest{Body: body})
		m, msg := cl.next()
		if msg.MessageID != res.MessageID || !bytes.Equal(m.Payload(), body) {
			t.Fatalf("round %d: got %q with %d bytes, want %q with %d", round, msg.MessageID, len(m.Payload()), res.MessageID, len(body))
		}
		if st := e.settled("big-c2d", res.MessageID); st.Outcome != iothub.StatusSuccess {
			t.Fatalf("round %d: %+v", round, st)
		}
	}
}
