package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/iothub"
)

type fixedTwin []byte

func (f fixedTwin) DeviceGet(context.Context, string) ([]byte, error)           { return f, nil }
func (f fixedTwin) DeviceReport(context.Context, string, []byte) (int64, error) { return 1, nil }

// A module's twin is not its device's: a module session's twin GET is not answered with the
// device's twin, and a client without a session gets nothing (and does not crash the broker).
func TestModuleTwinRequestIsNotAnsweredWithTheDevicesTwin(t *testing.T) {
	srv, peer := net.Pipe()
	defer srv.Close()
	defer peer.Close()
	ms := mqtt.New(nil)
	modCl := ms.NewClient(srv, "t", "gw/sensor", false)
	b := &Broker{opts: Options{Twins: fixedTwin(`{"the":"device's twin"}`)}, conns: map[*mqtt.Client]*conn{}, devices: map[string]*conn{}, ctx: context.Background()}
	b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	// wrunning: no writer runs, so what is written stays in c.wq to be looked at.
	mod := &conn{b: b, cl: modCl, deviceID: "gw", moduleID: "sensor", wrunning: true, pending: map[uint16]pendingDelivery{}, log: b.log}
	b.conns[modCl] = mod
	h := &twinHook{b: b}
	get := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "$iothub/twin/GET/?$rid=1"}
	if _, err := h.OnPublish(modCl, get); err != packets.CodeSuccessIgnore {
		t.Fatalf("OnPublish: %v, want the publish dropped", err)
	}
	if len(mod.wq) != 0 {
		t.Fatalf("the module was answered on %q", mod.wq[0].pk.TopicName)
	}
	stranger := ms.NewClient(peer, "t", "gw", false)
	if _, err := h.OnPublish(stranger, get); err != packets.CodeSuccessIgnore {
		t.Fatalf("OnPublish without a session: %v", err)
	}
	// The same GET from the device's own session is answered (the test can fail).
	dev := &conn{b: b, cl: stranger, deviceID: "gw", wrunning: true, pending: map[uint16]pendingDelivery{}, log: b.log}
	b.conns[stranger] = dev
	h.OnPublish(stranger, get)
	if len(dev.wq) != 1 || dev.wq[0].pk.TopicName != "$iothub/twin/res/200/?$rid=1" {
		t.Fatalf("the device's GET: %d answers queued", len(dev.wq))
	}
}

// As for the device-bound subscription (TestReusedPacketIDDoesNotReattach): a device that reuses
// the packet id of its old desired-properties SUBSCRIBE for another subscription, after it
// unsubscribed, gets no desired changes.
func TestReusedPacketIDDoesNotResubscribeDesired(t *testing.T) {
	b, h := startPinBroker(t, Options{})
	r := dialRaw(t, b, h, "pi-reuse")
	const topic = "$iothub/twin/PATCH/properties/desired/?$version=2"
	if g := r.subscribe(5, twinDesiredFilter); g != 1 {
		t.Fatalf("desired subscribe granted 0x%02x", g)
	}
	r.ping()
	if sent, err := b.PublishDesired("pi-reuse", topic, []byte(`{}`)); !sent || err != nil {
		t.Fatalf("subscribed: sent %v, %v", sent, err)
	}
	if typ, _ := r.read(); typ != packets.Publish {
		t.Fatalf("got packet type %d, want the desired change", typ)
	}
	r.unsubscribe(6, twinDesiredFilter)
	if g := r.subscribe(5, twinResponseFilter); g != 1 {
		t.Fatalf("twin response subscribe granted 0x%02x", g)
	}
	r.ping()
	if sent, _ := b.PublishDesired("pi-reuse", topic, []byte(`{}`)); sent {
		t.Fatal("a SUBACK that reused the old packet id subscribed the device to desired changes again")
	}
}

// A direct-method call to a session that has ended, or whose connection is closed and whose
// disconnect is still being handled, is refused at once (the service answers DeviceNotOnline)
// rather than queued for a connection that will never write it.
func TestMethodCallToEndingSessionIsRefused(t *testing.T) {
	b := bareBroker(t)
	for _, end := range []func(c *conn){
		func(c *conn) { b.life.Lock(); b.retire(c); b.life.Unlock() }, // taken over
		func(c *conn) { c.cl.Stop(errors.New("connection reset")) },   // OnDisconnect not run yet
	} {
		cl := pipeClient(t, b, "pi-m")
		b.srv.Clients.Add(cl)
		c := b.establish(cl, authFor("pi-m", time.Time{}))
		c.mu.Lock()
		c.meth.ready = true
		c.mu.Unlock()
		end(c)
		if sent, err := b.PublishMethod("pi-m", iothub.MethodRequestTopic("reboot", "1"), nil); sent || err != nil {
			t.Fatalf("call to an ending session: sent %v, %v", sent, err)
		}
	}
}

// Calls made between the grant and the SUBACK are held up to maxHeldRequests (16); the next is
// refused as not online. Released after the SUBACK, none is reported as dropped.
func TestMethodCallsHeldForASubackAreBounded(t *testing.T) {
	srv, peer := net.Pipe()
	defer srv.Close()
	defer peer.Close()
	cl := mqtt.New(nil).NewClient(srv, "t", "pi-1", false)
	logs := &syncBuffer{}
	b := &Broker{opts: Options{Methods: &readySink{}}, conns: map[*mqtt.Client]*conn{}, devices: map[string]*conn{}}
	b.log = slog.New(slog.NewTextHandler(logs, nil))
	c := &conn{b: b, cl: cl, deviceID: "pi-1", wrunning: true, pending: map[uint16]pendingDelivery{}, log: b.log}
	b.conns[cl], b.devices["pi-1"] = c, c
	h := &methodHook{b: b}
	h.OnSubscribed(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 7,
		Filters: packets.Subscriptions{{Filter: iothub.MethodsFilter}}}, []byte{0})
	topic := iothub.MethodRequestTopic("state", "1")
	for i := range maxHeldRequests {
		if sent, err := b.PublishMethod("pi-1", topic, nil); !sent || err != nil {
			t.Fatalf("call %d before the SUBACK: sent %v, %v", i+1, sent, err)
		}
	}
	if sent, _ := b.PublishMethod("pi-1", topic, nil); sent {
		t.Fatalf("call %d before the SUBACK held", maxHeldRequests+1)
	}
	h.OnPacketSent(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: 7}, nil)
	if len(c.wq) != maxHeldRequests {
		t.Fatalf("%d requests written after the SUBACK, want %d", len(c.wq), maxHeldRequests)
	}
	if strings.Contains(logs.String(), "dropped") {
		t.Fatalf("released requests reported dropped:\n%s", logs)
	}
}
