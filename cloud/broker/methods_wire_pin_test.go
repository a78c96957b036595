package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// methodLog stands in for cloud/methods.Service: what the broker tells it.
type methodLog struct {
	mu        sync.Mutex
	ready     []string
	responses []string
}

func (m *methodLog) MethodsReady(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ready = append(m.ready, id)
}

func (m *methodLog) MethodResponse(id, rid string, status int, body []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.responses = append(m.responses, fmt.Sprintf("%s %s %d %s", id, rid, status, body))
}

func (m *methodLog) snapshot() (ready, responses []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.ready...), append([]string(nil), m.responses...)
}

// A device subscribed to direct methods gets each request on its topic and answers on
// `$iothub/methods/res/{status}/?$rid=`: the service hears of the subscription once its SUBACK is
// written and of each well-formed answer; a malformed answer is dropped; a persistent session
// keeps the subscription across a reconnect (the service hears of it again); after an unsubscribe
// no request is sent.
func TestDirectMethodsOverTheWire(t *testing.T) {
	sink := &methodLog{}
	e := newEnv(t, envOpt{opts: func(o *broker.Options) { o.Methods = sink }})
	d := e.device("pi-m")
	cl := e.connect(d, clientOpts{})
	req := iothub.MethodRequestTopic("reboot", "1")
	if sent, _ := e.b.PublishMethod("pi-m", req, []byte(`{}`)); sent {
		t.Fatal("request sent before the device subscribed")
	}
	if g := cl.subscribe(iothub.MethodsFilter, 0); g != 0 {
		t.Fatalf("methods subscribe granted 0x%02x", g)
	}
	eventually(t, "the service to hear the device is ready", func() bool { r, _ := sink.snapshot(); return len(r) == 1 })
	if sent, err := e.b.PublishMethod("pi-m", req, []byte(`{"delay":5}`)); !sent || err != nil {
		t.Fatalf("subscribed: sent %v, %v", sent, err)
	}
	cl.expect(req, `{"delay":5}`)
	for _, topic := range []string{"$iothub/methods/res/abc/?$rid=1", iothub.MethodResponseTopic(200, "1")} {
		if err := cl.publish(topic, 1, []byte(`{"ok":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, got := sink.snapshot(); len(got) != 1 || got[0] != `pi-m 1 200 {"ok":true}` {
		t.Fatalf("answers the service heard: %q", got)
	}

	cl.c.Disconnect(250)
	eventually(t, "the session to end", func() bool { return e.b.Connected() == 0 })
	if sent, _ := e.b.PublishMethod("pi-m", req, nil); sent {
		t.Fatal("request sent to a device that disconnected")
	}
	cl = e.connect(d, clientOpts{}) // resumes the persistent session, subscription included
	eventually(t, "the resumed session to be ready", func() bool { r, _ := sink.snapshot(); return len(r) == 2 })
	if sent, _ := e.b.PublishMethod("pi-m", req, []byte(`{}`)); !sent {
		t.Fatal("the resumed session takes no requests")
	}
	cl.expect(req, `{}`)
	if tok := cl.c.Unsubscribe(iothub.MethodsFilter); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	if sent, _ := e.b.PublishMethod("pi-m", req, nil); sent {
		t.Fatal("request sent after the device unsubscribed")
	}
}

// A module's session is not its device's: its methods subscription does not tell the service the
// device is ready, and the device's requests never go to it. (Its answers cannot arrive: the ACL
// refuses a module the methods response topic.)
func TestModuleSessionTakesNoDeviceMethods(t *testing.T) {
	sink := &methodLog{}
	e := newEnv(t, envOpt{opts: func(o *broker.Options) { o.Methods = sink }})
	d := e.device("gw")
	tok, err := iothub.NewSASToken(iothub.DeviceResource(testHost, "gw", "sensor"), d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	mod := e.connect(d, clientOpts{clientID: "gw/sensor", username: iothub.FormatUsername(testHost, "gw", "sensor", nil), password: tok})
	if g := mod.subscribe(iothub.MethodsFilter, 0); g != 0 {
		t.Fatalf("methods subscribe granted 0x%02x", g)
	}
	// A QoS 1 event's PUBACK: the broker has finished with the SUBACK before it.
	if err := mod.publish("devices/gw/modules/sensor/messages/events/", 1, []byte("t=21")); err != nil {
		t.Fatal(err)
	}
	if ready, _ := sink.snapshot(); len(ready) != 0 {
		t.Fatalf("a module's subscription told the service %q is ready", ready)
	}
	mod.c.Disconnect(250)
	eventually(t, "the module's session to end", func() bool { return e.b.Connected() == 0 })
	mod = e.connect(d, clientOpts{clientID: "gw/sensor", username: iothub.FormatUsername(testHost, "gw", "sensor", nil), password: tok})
	if err := mod.publish("devices/gw/modules/sensor/messages/events/", 1, []byte("t=22")); err != nil {
		t.Fatal(err)
	}
	if ready, _ := sink.snapshot(); len(ready) != 0 {
		t.Fatalf("a module's resumed session told the service %q is ready", ready)
	}
	if sent, _ := e.b.PublishMethod("gw", iothub.MethodRequestTopic("reboot", "1"), nil); sent {
		t.Fatal("the device's request went to its module's session")
	}
}

// Only a subscription to the methods filter makes a device ready for direct methods, and only one
// to the desired-properties filter makes it take desired changes: a device subscribed to its
// twin's answers (and its C2D topic) gets neither, and the service hears nothing of it.
func TestOtherSubscriptionsDoNotTakeMethodsOrDesired(t *testing.T) {
	sink := &methodLog{}
	e := newEnv(t, envOpt{opts: func(o *broker.Options) { o.Methods = sink }})
	d := e.device("pi-t")
	cl := e.connect(d, clientOpts{})
	for _, f := range []string{"$iothub/twin/res/#", iothub.DeviceBoundFilter("pi-t")} {
		if g := cl.subscribe(f, 1); g != 1 {
			t.Fatalf("subscribe %s granted 0x%02x", f, g)
		}
	}
	// A QoS 1 event's PUBACK: the broker has finished with both SUBACKs before it.
	if err := cl.publish("devices/pi-t/messages/events/", 1, []byte("t=21")); err != nil {
		t.Fatal(err)
	}
	if sent, err := e.b.PublishMethod("pi-t", iothub.MethodRequestTopic("reboot", "1"), nil); sent || err != nil {
		t.Fatalf("a device subscribed only to its twin and C2D topics took a method request: sent %v, %v", sent, err)
	}
	if ready, _ := sink.snapshot(); len(ready) != 0 {
		t.Fatalf("the service was told %q is ready for methods", ready)
	}
	if sent, err := e.b.PublishDesired("pi-t", "$iothub/twin/PATCH/properties/desired/?$version=2", []byte(`{"led":1}`)); sent || err != nil {
		t.Fatalf("a device not subscribed to desired changes took one: sent %v, %v", sent, err)
	}
}
