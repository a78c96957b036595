package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Internal tests of the session lifecycle: what a real connection reaches only through a race
// (two connections of one client id, a hook running while its client closes) is driven here one
// step at a time, against a real hub core.

const pinHost = "c2d.test"

func pinHub(t *testing.T) *hub.Hub {
	t.Helper()
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: pinHost}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// bareBroker is a broker that was never started: sessions are made by calling establish with
// mochi clients on in-memory pipes, registered in a mochi server's client list by the test.
func bareBroker(t *testing.T) *Broker {
	t.Helper()
	b, err := New(pinHub(t), Options{MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	b.srv = mqtt.New(nil)
	return b
}

func pipeClient(t *testing.T, b *Broker, id string) *mqtt.Client {
	t.Helper()
	s, p := net.Pipe()
	t.Cleanup(func() { _ = s.Close(); _ = p.Close() })
	return b.srv.NewClient(s, "t", id, false)
}

func authFor(id string, expiry time.Time) authInfo {
	return authInfo{AuthResult: hub.AuthResult{DeviceID: id}, expiry: expiry}
}

// Two connections of one device race through CONNECT; mochi keeps the later one as the client
// id's session. The earlier one, established last, must not take the device over: the device's
// live connection stays open and keeps its deliveries, the stale one is closed.
func TestStaleSessionNeverTakesTheDeviceOver(t *testing.T) {
	b := bareBroker(t)
	older, newer := pipeClient(t, b, "pi-1"), pipeClient(t, b, "pi-1")
	b.srv.Clients.Add(newer)
	cNew := b.establish(newer, authFor("pi-1", time.Time{}))
	cOld := b.establish(older, authFor("pi-1", time.Time{}))
	if got := b.devices["pi-1"]; got != cNew {
		t.Fatalf("the stale session took the device over (current session %p, want the newer %p)", got, cNew)
	}
	if newer.Closed() || cNew.ended {
		t.Fatal("the device's live connection was closed by a stale one")
	}
	if !older.Closed() || !cOld.ended {
		t.Fatalf("the stale session is still open (closed %v, ended %v)", older.Closed(), cOld.ended)
	}
}

// After a takeover the replaced session's disconnect arrives last: it must not unregister the
// session that replaced it (direct methods and twin notifications go to b.devices).
func TestReplacedSessionEndingKeepsItsSuccessor(t *testing.T) {
	b := bareBroker(t)
	first := pipeClient(t, b, "pi-1")
	b.srv.Clients.Add(first)
	c1 := b.establish(first, authFor("pi-1", time.Time{}))
	second := pipeClient(t, b, "pi-1")
	b.srv.Clients.Add(second) // mochi hands the client id over
	c2 := b.establish(second, authFor("pi-1", time.Time{}))
	if !first.Closed() || b.devices["pi-1"] != c2 {
		t.Fatal("test set-up: the second session did not take over")
	}
	b.endSession(c1, packets.ErrSessionTakenOver)
	if got := b.devices["pi-1"]; got != c2 {
		t.Fatalf("the replaced session's disconnect unregistered its successor (current %p, want %p)", got, c2)
	}
	b.endSession(c2, nil)
	if got, ok := b.devices["pi-1"]; ok {
		t.Fatalf("a disconnected device still has a current session %p", got)
	}
}

// Every session arms a timer for its token's expiry. A session that has ended must not keep it:
// the timer holds the session (its client and buffers) until the token expires, so a device
// reconnecting in a loop with hour-long tokens would pile up dead sessions, and an hour later
// each would log "SAS token expired" for a device long gone.
func TestEndedSessionHoldsNoExpiryTimer(t *testing.T) {
	b := bareBroker(t)
	cl := pipeClient(t, b, "pi-1")
	b.srv.Clients.Add(cl)
	c := b.establish(cl, authFor("pi-1", time.Now().Add(time.Hour)))
	if c.timer == nil {
		t.Fatal("test set-up: no expiry timer armed")
	}
	b.endSession(c, nil)
	if c.timer.Stop() {
		t.Fatal("the ended session's expiry timer was still armed")
	}
}

// A session that has ended (replaced or disconnected) or whose connection is closed is never
// registered with the core for delivery, whatever hook asks for it afterwards.
func TestEndedOrClosedSessionIsNeverAttached(t *testing.T) {
	b := bareBroker(t)
	est := func(id string) *conn {
		cl := pipeClient(t, b, id)
		b.srv.Clients.Add(cl)
		return b.establish(cl, authFor(id, time.Time{}))
	}
	ended := est("pi-ended")
	b.life.Lock()
	b.retire(ended) // what a takeover does before it closes the connection
	b.life.Unlock()
	b.attach(ended, 1)

	closed := est("pi-closed")
	closed.cl.Stop(errors.New("connection reset")) // OnDisconnect has not run yet
	b.attach(closed, 1)

	live := est("pi-live")
	b.attach(live, 1)
	t.Cleanup(func() { b.detach(live) })
	for _, c := range []*conn{ended, closed, live} {
		c.mu.Lock()
		got := c.attached
		c.mu.Unlock()
		if want := c == live; got != want {
			t.Errorf("%s: attached %v, want %v", c.deviceID, got, want)
		}
	}
}

// The session hooks see every client: one the broker holds no session for changes nothing (and
// does not crash the broker), and a module's session never becomes the receiver of its device's
// messages, even if a device-bound subscription were granted to it.
func TestDeviceBoundHooksIgnoreClientsWithoutADeviceSession(t *testing.T) {
	b := bareBroker(t)
	h := &sessionHook{b: b}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 3,
		Filters: packets.Subscriptions{{Filter: iothub.DeviceBoundFilter("gw"), Qos: 1}}}
	suback := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: 3}

	stranger := pipeClient(t, b, "gw")
	h.OnSubscribed(stranger, sub, []byte{1})
	h.OnPacketSent(stranger, suback, nil)

	mod := pipeClient(t, b, "gw/sensor")
	b.srv.Clients.Add(mod)
	c := b.establish(mod, authInfo{AuthResult: hub.AuthResult{DeviceID: "gw", ModuleID: "sensor"}})
	h.OnSubscribed(mod, sub, []byte{1})
	h.OnPacketSent(mod, suback, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attached || c.attachSet {
		t.Fatalf("a module session was attached to its device's queue (attached %v, pending %v)", c.attached, c.attachSet)
	}
}

// rawDevice is a device speaking MQTT 3.1.1 packet by packet to a real broker, so that a test
// chooses the packet ids (many small clients reuse one id for every SUBSCRIBE).
type rawDevice struct {
	t *testing.T
	c net.Conn
}

func startPinBroker(t *testing.T, opts Options) (*Broker, *hub.Hub) {
	t.Helper()
	h := pinHub(t)
	opts.MQTTAddr = "127.0.0.1:0"
	b, err := New(h, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, h
}

func dialRaw(t *testing.T, b *Broker, h *hub.Hub, id string) *rawDevice {
	t.Helper()
	d, _, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: id}, "")
	if err != nil {
		t.Fatal(err)
	}
	return connectRawDevice(t, b, id, d.Authentication.SymmetricKey.PrimaryKey)
}

// connectRawDevice connects (another session of) a registered device with its key.
func connectRawDevice(t *testing.T, b *Broker, id, key string) *rawDevice {
	t.Helper()
	tok, err := iothub.DeviceConnectionString{HostName: pinHost, DeviceID: id, SharedAccessKey: key}.Token(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", b.Addr(ListenerMQTT))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawDevice{t: t, c: nc}
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(iothub.FormatUsername(pinHost, id, "", nil)), PasswordFlag: true, Password: []byte(tok)}})
	if typ, body := r.read(); typ != packets.Connack || !bytes.Equal(body, []byte{0, 0}) {
		t.Fatalf("CONNACK: type %d body % x", typ, body)
	}
	return r
}

func (r *rawDevice) send(pk packets.Packet) {
	r.t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		pk.FixedHeader.Qos = 1
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next packet's type and body.
func (r *rawDevice) read() (byte, []byte) {
	r.t.Helper()
	var h [1]byte
	if _, err := io.ReadFull(r.c, h[:]); err != nil {
		r.t.Fatalf("read packet: %v", err)
	}
	n, shift := 0, 0
	for {
		var b [1]byte
		if _, err := io.ReadFull(r.c, b[:]); err != nil {
			r.t.Fatalf("read length: %v", err)
		}
		n |= int(b[0]&0x7f) << shift
		if b[0]&0x80 == 0 {
			break
		}
		shift += 7
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.c, body); err != nil {
		r.t.Fatalf("read body: %v", err)
	}
	return h[0] >> 4, body
}

func (r *rawDevice) subscribe(pid uint16, filter string) byte {
	r.t.Helper()
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, ProtocolVersion: 4, PacketID: pid,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}})
	typ, body := r.read()
	if typ != packets.Suback || len(body) != 3 || uint16(body[0])<<8|uint16(body[1]) != pid {
		r.t.Fatalf("SUBACK for %s: type %d body % x", filter, typ, body)
	}
	return body[2]
}

func (r *rawDevice) unsubscribe(pid uint16, filter string) {
	r.t.Helper()
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe}, ProtocolVersion: 4, PacketID: pid,
		Filters: packets.Subscriptions{{Filter: filter}}})
	if typ, _ := r.read(); typ != packets.Unsuback {
		r.t.Fatalf("UNSUBACK: type %d", typ)
	}
}

// ping returns once the broker has finished with every packet sent before it: mochi handles one
// client's packets in order, hooks included.
func (r *rawDevice) ping() {
	r.t.Helper()
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	if typ, _ := r.read(); typ != packets.Pingresp {
		r.t.Fatalf("PINGRESP: type %d", typ)
	}
}

func attachedNow(t *testing.T, b *Broker, id string) bool {
	t.Helper()
	b.mu.RLock()
	c := b.devices[id]
	b.mu.RUnlock()
	if c == nil {
		t.Fatalf("no session of %s", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attached
}

// MQTT lets a client reuse a packet id once its exchange is over. A device that subscribed to its
// messages with id 5, unsubscribed, then subscribes to something else with id 5 again is not
// receiving: its queue waits (docs/protocol.md §3).
func TestReusedPacketIDDoesNotReattach(t *testing.T) {
	b, h := startPinBroker(t, Options{})
	r := dialRaw(t, b, h, "pi-reuse")
	if g := r.subscribe(5, iothub.DeviceBoundFilter("pi-reuse")); g != 1 {
		t.Fatalf("device-bound subscribe granted 0x%02x", g)
	}
	r.ping()
	if !attachedNow(t, b, "pi-reuse") {
		t.Fatal("not receiving after its device-bound SUBACK")
	}
	r.unsubscribe(6, iothub.DeviceBoundFilter("pi-reuse"))
	r.ping()
	if attachedNow(t, b, "pi-reuse") {
		t.Fatal("still receiving after it unsubscribed")
	}
	if g := r.subscribe(5, "$iothub/twin/res/#"); g != 1 {
		t.Fatalf("twin subscribe granted 0x%02x", g)
	}
	r.ping()
	if attachedNow(t, b, "pi-reuse") {
		t.Fatal("a SUBACK for the twin topic that reused the old packet id started delivery again")
	}
}

// MQTT 3.1.1 has no DISCONNECT from the server: a 3.1.1 device the hub drops (deleted, disabled,
// token expired) sees its connection closed with nothing written first, as Azure does.
func TestDroppedMQTT311DeviceGetsNoDisconnectPacket(t *testing.T) {
	b, h := startPinBroker(t, Options{})
	r := dialRaw(t, b, h, "pi-kick")
	r.ping() // the session is established
	b.DisconnectDevice("pi-kick", "test")
	got, err := io.ReadAll(r.c)
	if err != nil {
		t.Fatalf("read after the drop: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("a 3.1.1 device was sent % x before its connection closed, want nothing", got)
	}
}

// A new connection of a device takes its session over; MQTT 3.1.1 has no DISCONNECT from the
// server, so the old connection is closed with nothing written first (mochi would send one).
func TestTakenOverMQTT311SessionGetsNoDisconnectPacket(t *testing.T) {
	b, h := startPinBroker(t, Options{})
	old := dialRaw(t, b, h, "pi-take")
	old.ping()
	d, err := h.GetDevice(context.Background(), "pi-take")
	if err != nil {
		t.Fatal(err)
	}
	connectRawDevice(t, b, "pi-take", d.Authentication.SymmetricKey.PrimaryKey).ping()
	got, err := io.ReadAll(old.c)
	if err != nil {
		t.Fatalf("read after the takeover: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("the taken-over 3.1.1 connection was sent % x before it closed, want nothing", got)
	}
}

// MQTT 3.1.1 has no negative PUBACK: a device's QoS 1 PUBLISH to a topic it may not publish to
// closes its connection, with nothing written first; a QoS 0 one is dropped and the connection
// stays.
func TestRefusedPublishQoS1ClosesQoS0Drops(t *testing.T) {
	b, h := startPinBroker(t, Options{})
	r := dialRaw(t, b, h, "pi-pub")
	other := iothub.EventsTopic("pi-other", nil)
	pub := func(qos byte, pid uint16) {
		var buf bytes.Buffer
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: 4, TopicName: other, PacketID: pid, Payload: []byte("spoof")}
		if err := pk.PublishEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := r.c.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	pub(0, 0)
	r.ping() // still connected
	pub(1, 9)
	got, err := io.ReadAll(r.c)
	if err != nil {
		t.Fatalf("read after the refused QoS 1 PUBLISH: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("the device was sent % x before its connection closed, want nothing", got)
	}
}

// A 3.1.1 CONNACK carries only 3.1.1 return codes: an empty client id with CleanSession=0 is
// refused with 0x02 identifier rejected (mochi's own answer is MQTT 5's 0x80).
func TestEmptyClientIDWithPersistentSessionRefusedWith311Code(t *testing.T) {
	b, _ := startPinBroker(t, Options{})
	nc, err := net.Dial("tcp", b.Addr(ListenerMQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawDevice{t: t, c: nc}
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 60}})
	if typ, body := r.read(); typ != packets.Connack || !bytes.Equal(body, []byte{0, 0x02}) {
		t.Fatalf("CONNACK type %d body % x, want return code 0x02", typ, body)
	}
}

// Events.AcceptError hears of every failed Accept, named by the listener that failed; without
// the observer a failed Accept is only logged.
func TestAcceptErrorsReachTheObserverNamedByListener(t *testing.T) {
	type report struct {
		listener string
		err      error
	}
	var got []report
	emfile := &net.OpError{Op: "accept", Err: syscall.EMFILE}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	health := func(l any) *acceptHealth {
		switch l := l.(type) {
		case *tcpListener:
			return &l.health
		case *wsListener:
			return &l.health
		}
		t.Fatalf("listener %T", l)
		return nil
	}
	b, _ := startPinBroker(t, Options{WSAddr: "127.0.0.1:0", Events: Events{AcceptError: func(l string, err error) { got = append(got, report{l, err}) }}})
	for _, name := range []string{ListenerMQTT, ListenerWS} {
		health(b.listeners[name]).failed(emfile, quiet, time.Millisecond)
	}
	if len(got) != 2 || got[0].listener != ListenerMQTT || got[1].listener != ListenerWS || !errors.Is(got[0].err, syscall.EMFILE) {
		t.Fatalf("AcceptError reports %+v, want mqtt then ws with EMFILE", got)
	}
	plain, _ := startPinBroker(t, Options{})
	health(plain.listeners[ListenerMQTT]).failed(emfile, quiet, time.Millisecond) // no observer: no panic
}

// mochi's own log lines reach the hub's journal at Warn and above, and only those with a message
// (its message-less per-connection warnings repeat what the auth hook logs with the reason).
func TestMochiLogsPassAtWarnWithAMessage(t *testing.T) {
	var out strings.Builder
	log := slog.New(quietHandler{slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})})
	log.Debug("mochi debug")
	log.Info("mochi info")
	log.Warn("mochi warning")
	log.Error("mochi error")
	log.Warn("", "listener", "t1")
	s := out.String()
	for _, want := range []string{"mochi warning", "mochi error"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q not logged", want)
		}
	}
	for _, not := range []string{"mochi debug", "mochi info", "listener=t1"} {
		if strings.Contains(s, not) {
			t.Errorf("%q logged", not)
		}
	}
	out.Reset()
	slog.New(quietHandler{slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError})}).Warn("below the journal's level")
	if out.Len() != 0 {
		t.Errorf("a warning passed a handler set to errors only: %s", out.String())
	}
}
