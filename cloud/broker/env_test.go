package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/testproc"
)

const testHost = "c2d.test"

// wait is the deadline of every single expectation in these tests.
const wait = 10 * time.Second

// env is a real hub core on a temp dir and a real broker on 127.0.0.1 ports.
type env struct {
	t    testing.TB
	hub  *hub.Hub
	b    *broker.Broker
	logs *testproc.SyncBuffer
}

type envOpt struct {
	cfg  hub.Config
	opts func(*broker.Options)
	core func(*hub.Hub) broker.Core // what the broker talks to (nil: the hub itself)
}

func newEnv(t testing.TB, o envOpt) *env {
	t.Helper()
	cfg := o.cfg
	cfg.HostName = testHost
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = time.Minute // tests that need lock expiry set a short one
	}
	h, err := hub.Open(context.Background(), t.TempDir(), cfg, hub.Events{})
	if err != nil {
		t.Fatalf("hub.Open: %v", err)
	}
	logs := &testproc.SyncBuffer{}
	opts := broker.Options{
		MQTTAddr: "127.0.0.1:0",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.opts != nil {
		o.opts(&opts)
	}
	var core broker.Core = h
	if o.core != nil {
		core = o.core(h)
	}
	b, err := broker.New(core, opts)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("broker.Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("broker.Close: %v", err)
		}
		if err := h.Close(); err != nil {
			t.Errorf("hub.Close: %v", err)
		}
		if t.Failed() {
			t.Logf("broker log:\n%s", logs.String())
		}
	})
	return &env{t: t, hub: h, b: b, logs: logs}
}

// device creates an enabled device with generated keys.
func (e *env) device(id string) iothub.Device {
	e.t.Helper()
	d, _, err := e.hub.PutDevice(context.Background(), iothub.Device{DeviceID: id}, "")
	if err != nil {
		e.t.Fatalf("PutDevice %s: %v", id, err)
	}
	return d
}

func (e *env) setStatus(d iothub.Device, s iothub.DeviceStatus) {
	e.t.Helper()
	d.Status = s
	if _, _, err := e.hub.PutDevice(context.Background(), d, "*"); err != nil {
		e.t.Fatalf("PutDevice %s status %s: %v", d.DeviceID, s, err)
	}
}

func token(t testing.TB, d iothub.Device, key string, ttl time.Duration) string {
	t.Helper()
	if key == "" {
		key = d.Authentication.SymmetricKey.PrimaryKey
	}
	tok, err := iothub.DeviceConnectionString{HostName: testHost, DeviceID: d.DeviceID, SharedAccessKey: key}.Token(time.Now(), ttl)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	return tok
}

func (e *env) send(id string, req iothub.SendRequest) iothub.SendResult {
	e.t.Helper()
	res, err := e.hub.Send(context.Background(), id, req)
	if err != nil {
		e.t.Fatalf("Send to %s: %v", id, err)
	}
	return res
}

func (e *env) status(id, mid string) iothub.MessageStatus {
	e.t.Helper()
	st, err := e.hub.MessageStatus(context.Background(), id, mid)
	if err != nil {
		e.t.Fatalf("MessageStatus %s/%s: %v", id, mid, err)
	}
	return st
}

func (e *env) settled(id, mid string) iothub.MessageStatus {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := e.hub.WaitSettled(ctx, id, mid)
	if err != nil {
		e.t.Fatalf("WaitSettled %s/%s: %v (state %s)", id, mid, err, st.State)
	}
	return st
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// device-side client ---------------------------------------------------------------------------

type clientOpts struct {
	clientID  string // default: the device id
	username  string // default: FormatUsername(testHost, id, "", extra)
	password  string // default: a fresh primary-key token
	extension bool
	clean     bool
	manualAck bool
	url       string // default: tcp://{mqtt addr}
	tls       *tls.Config
}

type client struct {
	t    testing.TB
	c    paho.Client
	msgs chan paho.Message
	lost chan error
	tok  paho.Token
}

func (e *env) connect(d iothub.Device, o clientOpts) *client {
	e.t.Helper()
	cl := e.dial(d, o)
	if err := cl.tok.Error(); err != nil {
		e.t.Fatalf("connect %s: %v", d.DeviceID, err)
	}
	return cl
}

// dial connects and returns the client whatever the outcome (cl.tok holds it).
func (e *env) dial(d iothub.Device, o clientOpts) *client {
	e.t.Helper()
	cl := e.start(d, o)
	if !cl.tok.WaitTimeout(wait) {
		e.t.Fatalf("connect %s: no CONNACK within %v", d.DeviceID, wait)
	}
	return cl
}

// start begins connecting; cl.tok completes with the CONNACK. Safe from any goroutine when
// o.password is set.
func (e *env) start(d iothub.Device, o clientOpts) *client {
	if o.clientID == "" {
		o.clientID = d.DeviceID
	}
	if o.username == "" {
		extra := url.Values{}
		extra.Set(iothub.ParamDeviceClientType, "c2d-broker-test/1.0")
		if o.extension {
			extra.Set(iothub.ExtensionParam, iothub.ExtensionDispositions)
		}
		o.username = iothub.FormatUsername(testHost, d.DeviceID, "", extra)
	}
	if o.password == "" {
		o.password = token(e.t, d, "", time.Hour)
	}
	if o.url == "" {
		o.url = "tcp://" + e.b.Addr(broker.ListenerMQTT)
	}
	cl := &client{t: e.t, msgs: make(chan paho.Message, 100), lost: make(chan error, 1)}
	po := paho.NewClientOptions().
		AddBroker(o.url).
		SetClientID(o.clientID).
		SetUsername(o.username).
		SetPassword(o.password).
		SetCleanSession(o.clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(wait).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true). // the handler only queues (never blocks): keeps wire order
		SetAutoAckDisabled(o.manualAck).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { cl.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { cl.lost <- err })
	if o.tls != nil {
		po.SetTLSConfig(o.tls)
	}
	cl.c = paho.NewClient(po)
	cl.tok = cl.c.Connect()
	e.t.Cleanup(func() { cl.c.Disconnect(0) })
	return cl
}

// subscribe subscribes and returns the granted QoS (0x80 = refused).
func (cl *client) subscribe(filter string, qos byte) byte {
	cl.t.Helper()
	tok := cl.c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(wait) {
		cl.t.Fatalf("subscribe %s: no SUBACK", filter)
	}
	if err := tok.Error(); err != nil {
		cl.t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func (cl *client) subscribeC2D(deviceID string) {
	cl.t.Helper()
	if g := cl.subscribe(iothub.DeviceBoundFilter(deviceID), 1); g != 1 {
		cl.t.Fatalf("subscribe %s: granted 0x%02x, want 1", iothub.DeviceBoundFilter(deviceID), g)
	}
}

func (cl *client) publish(topic string, qos byte, payload []byte) error {
	cl.t.Helper()
	tok := cl.c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(wait) {
		return errors.New("publish: no PUBACK within deadline")
	}
	return tok.Error()
}

// next returns the next device-bound message, parsed.
func (cl *client) next() (paho.Message, *iothub.Message) {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		_, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
		if err != nil {
			cl.t.Fatalf("received topic %q: %v", m.Topic(), err)
		}
		return m, msg
	case err := <-cl.lost:
		cl.t.Fatalf("connection lost while waiting for a message: %v", err)
	case <-time.After(wait):
		cl.t.Fatalf("no message within %v", wait)
	}
	return nil, nil
}

// none asserts that no message arrives within d (used only where the absence is the point, after
// a positive synchronisation point).
func (cl *client) none(d time.Duration) {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		cl.t.Fatalf("unexpected message on %q", m.Topic())
	case <-time.After(d):
	}
}

func (cl *client) waitLost() error {
	cl.t.Helper()
	select {
	case err := <-cl.lost:
		return err
	case <-time.After(wait):
		cl.t.Fatalf("connection not closed within %v", wait)
	}
	return nil
}

// selfSigned returns a server TLS config for 127.0.0.1 and a client config trusting it.
func selfSigned(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "c2d-broker-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}
