package broker

import (
	"context"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// connectRaw starts a real hub and broker and connects device "dev-a" with the given paho
// options applied; it returns the broker and the mochi client of the established session, read
// under the broker's lock (after the auth hook has finished with it).
func connectRaw(t *testing.T, opt func(*paho.ClientOptions)) (*Broker, *mqtt.Client) {
	t.Helper()
	const host = "c2d.test"
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: host}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(h, Options{MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(); _ = h.Close() })
	d, _, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: "dev-a"}, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iothub.DeviceConnectionString{HostName: host, DeviceID: "dev-a", SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}.Token(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	po := paho.NewClientOptions().AddBroker("tcp://" + b.Addr(ListenerMQTT)).SetClientID("dev-a").
		SetUsername(iothub.FormatUsername(host, "dev-a", "", nil)).SetPassword(tok).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	opt(po)
	c := paho.NewClient(po)
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connect: %v", tk.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.RLock()
		dc := b.devices["dev-a"]
		b.mu.RUnlock()
		if dc != nil {
			return b, dc.cl
		}
		if time.Now().After(deadline) {
			t.Fatal("no session established for dev-a")
		}
		time.Sleep(5 * time.Millisecond) // polling for a state change, not standing in for one
	}
}

// Azure caps keep-alive at 1767 s and applies the cap to a client asking for none (0), so a
// silent or half-open connection is always dropped after 1.5 × 1767 s.
func TestKeepAliveZeroIsCappedToAzureMaximum(t *testing.T) {
	for _, tc := range []struct {
		ask  time.Duration
		want uint16
	}{
		{0, 1767},
		{3600 * time.Second, 1767},
		{1768 * time.Second, 1767},
		{1767 * time.Second, 1767},
		{60 * time.Second, 60},
	} {
		_, cl := connectRaw(t, func(o *paho.ClientOptions) { o.SetKeepAlive(tc.ask) })
		if got := cl.State.Keepalive; got != tc.want {
			t.Errorf("keep-alive asked %v: the broker uses %d s, want %d s", tc.ask, got, tc.want)
		}
	}
}

// A will would be published by the broker on the device's behalf, to any topic and past the ACL:
// it is dropped at CONNECT.
func TestWillMessageIsDropped(t *testing.T) {
	_, cl := connectRaw(t, func(o *paho.ClientOptions) {
		o.SetWill(iothub.EventsTopic("dev-b", nil), "spoofed last words", 1, false)
	})
	if w := cl.Properties.Will; w.Flag != 0 || w.TopicName != "" || len(w.Payload) != 0 {
		t.Fatalf("the broker kept the device's will: %+v", w)
	}
}
