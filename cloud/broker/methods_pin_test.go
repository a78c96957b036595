package broker

import (
	"io"
	"log/slog"
	"net"
	"testing"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/iothub"
)

type readySink struct{ ready []string }

func (s *readySink) MethodsReady(id string)                     { s.ready = append(s.ready, id) }
func (s *readySink) MethodResponse(string, string, int, []byte) {}

// A device that has its SUBACK for the methods filter can be called at once (a service that
// watches the device may call as soon as the device subscribed). A call made after mochi granted
// the subscription and before the SUBACK was written is written right after the SUBACK — neither
// refused as DeviceNotOnline nor written ahead of the SUBACK.
func TestMethodCallBetweenGrantAndSubackIsHeld(t *testing.T) {
	srv, peer := net.Pipe()
	defer srv.Close()
	defer peer.Close()
	cl := mqtt.New(nil).NewClient(srv, "t", "pi-1", false)
	sink := &readySink{}
	b := &Broker{opts: Options{Methods: sink}, conns: map[*mqtt.Client]*conn{}, devices: map[string]*conn{}}
	b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	// wrunning: no writer runs, so what is written stays in c.wq to be looked at.
	c := &conn{b: b, cl: cl, deviceID: "pi-1", wrunning: true, pending: map[uint16]pendingDelivery{}, log: b.log}
	b.conns[cl], b.devices["pi-1"] = c, c
	h := &methodHook{b: b}
	topic := iothub.MethodRequestTopic("state", "1")

	if sent, err := b.PublishMethod("pi-1", topic, []byte("null")); sent || err != nil {
		t.Fatalf("before any subscription: sent %v, %v; want not sent", sent, err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 7,
		Filters: packets.Subscriptions{{Filter: iothub.MethodsFilter}}}
	h.OnSubscribed(cl, sub, []byte{0})
	if sent, err := b.PublishMethod("pi-1", topic, []byte("null")); !sent || err != nil {
		t.Fatalf("granted, SUBACK not yet written: sent %v, %v; want sent", sent, err)
	}
	if len(c.wq) != 0 || len(sink.ready) != 0 {
		t.Fatalf("before the SUBACK is written: %d packets queued, ready told %v", len(c.wq), sink.ready)
	}
	h.OnPacketSent(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: 8}, nil)
	if len(c.wq) != 0 {
		t.Fatal("another SUBACK released the held request")
	}
	h.OnPacketSent(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: 7}, nil)
	if len(c.wq) != 1 || c.wq[0].pk.TopicName != topic || len(sink.ready) != 1 {
		t.Fatalf("after the SUBACK: %d packets queued, ready told %v; want the held request and pi-1", len(c.wq), sink.ready)
	}
	if sent, _ := b.PublishMethod("pi-1", topic, []byte("null")); !sent || len(c.wq) != 2 {
		t.Fatalf("subscribed: sent %v, %d queued", sent, len(c.wq))
	}
}
