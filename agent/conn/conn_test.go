package conn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/c2d-project/c2d/cloud/iothub"
)

const key = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"

var device = iothub.DeviceConnectionString{HostName: "hub.local", DeviceID: "pi-1", SharedAccessKey: key}

// connects records every CONNECT a real embedded broker receives.
type connects struct {
	mqtt.HookBase
	mu   sync.Mutex
	pks  []packets.ConnectParams
	wake chan struct{}
}

func (h *connects) ID() string { return "connects" }
func (h *connects) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *connects) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
func (h *connects) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.mu.Lock()
	h.pks = append(h.pks, pk.Connect)
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
	return true
}

func (h *connects) waitN(t *testing.T, n int) []packets.ConnectParams {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		pks := append([]packets.ConnectParams(nil), h.pks...)
		ch := h.wake
		h.mu.Unlock()
		if len(pks) >= n {
			return pks
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("saw %d CONNECTs, want %d", len(pks), n)
		}
	}
}

func broker(t *testing.T, tlsConfig *tls.Config) (*mqtt.Server, *connects, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	h := &connects{wake: make(chan struct{})}
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0", TLSConfig: tlsConfig})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, h, l.Address()
}

func run(t *testing.T, opts Options) (*Client, chan *Delivery) {
	t.Helper()
	got := make(chan *Delivery, 16)
	opts.Device = device
	opts.ClientType = "c2d-agent/test"
	opts.KeepAlive, opts.ConnectTimeout = 30*time.Second, 5*time.Second
	opts.ReconnectMin, opts.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	opts.Deliver = func(d *Delivery) { got <- d }
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, got
}

func TestConnectDialect(t *testing.T) {
	srv, h, addr := broker(t, nil)
	c, got := run(t, Options{BrokerURL: &url.URL{Scheme: "tcp", Host: addr}, Extension: true})
	pk := h.waitN(t, 1)[0]
	if pk.ClientIdentifier != "pi-1" || pk.Clean {
		t.Errorf("client id %q clean %v: want pi-1, persistent session", pk.ClientIdentifier, pk.Clean)
	}
	u, err := iothub.ParseUsername(string(pk.Username))
	if err != nil {
		t.Fatal(err)
	}
	if u.HostName != "hub.local" || u.DeviceID != "pi-1" || u.APIVersion() != iothub.APIVersion ||
		u.Params.Get(iothub.ParamDeviceClientType) != "c2d-agent/test" || !u.HasExtension(iothub.ExtensionDispositions) {
		t.Errorf("username %q", pk.Username)
	}
	tok, err := iothub.ParseSASToken(string(pk.Password))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Verify(key, iothub.DeviceResource("hub.local", "pi-1", ""), time.Now()); err != nil {
		t.Errorf("password does not verify: %v", err)
	}
	if d := time.Until(tok.Expiry); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("token expires in %v, want the 1h TTL", d)
	}

	// Deliveries are parsed; the PUBACK waits for Settle.
	waitConnected(t, c)
	m := &iothub.Message{MessageID: "m1", Properties: []iothub.AppProperty{{Name: "target", Value: "relay1"}}}
	if err := srv.Publish(iothub.DeviceBoundTopic("pi-1", m), []byte("body"), false, 1); err != nil {
		t.Fatal(err)
	}
	d := <-got
	if d.MessageID() != "m1" || d.Message.Properties[0].Value != "relay1" || string(d.Message.Body) != "body" || d.ParseErr != nil {
		t.Errorf("delivery %+v", d)
	}
}

func waitConnected(t *testing.T, c *Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("never connected")
		}
		time.Sleep(5 * time.Millisecond) // polling the client's state
	}
}

// The SAS token is renewed by reconnecting before it expires, with a fresh expiry each time.
func TestTokenRenewal(t *testing.T) {
	_, h, addr := broker(t, nil)
	run(t, Options{BrokerURL: &url.URL{Scheme: "tcp", Host: addr}, TokenTTL: 1500 * time.Millisecond})
	pks := h.waitN(t, 3)
	var prev time.Time
	for i, pk := range pks[:3] {
		tok, err := iothub.ParseSASToken(string(pk.Password))
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && !tok.Expiry.After(prev) {
			t.Errorf("CONNECT %d reuses expiry %v", i, tok.Expiry)
		}
		prev = tok.Expiry
		if pk.Clean {
			t.Errorf("CONNECT %d asked for a clean session", i)
		}
	}
}

// TLS with the hub's CA from the config; a broker signed by another CA is refused.
func TestTLS(t *testing.T) {
	caPEM, serverCert := testPKI(t)
	_, h, addr := broker(t, &tls.Config{Certificates: []tls.Certificate{serverCert}})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c, _ := run(t, Options{BrokerURL: &url.URL{Scheme: "ssl", Host: addr}, TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	h.waitN(t, 1)
	waitConnected(t, c)

	otherCA, _ := testPKI(t)
	other := x509.NewCertPool()
	other.AppendCertsFromPEM(otherCA)
	states := make(chan State, 16)
	run(t, Options{BrokerURL: &url.URL{Scheme: "ssl", Host: addr}, TLS: &tls.Config{RootCAs: other, ServerName: "127.0.0.1"},
		OnState: func(s State) { states <- s }})
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-states:
			if s.Connected {
				t.Fatal("connected through a certificate from an unknown CA")
			}
			if s.Err != nil {
				if !strings.Contains(s.Err.Error(), "certificate") {
					t.Errorf("error %v does not mention the certificate", s.Err)
				}
				return
			}
		case <-timeout:
			t.Fatal("no connection failure reported")
		}
	}
}

// testPKI makes a CA and a server certificate for 127.0.0.1 signed by it.
func testPKI(t *testing.T) (caPEM []byte, server tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "hub"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
}

// A list of brokers (a c2d-hub cluster's nodes): a dead first one is skipped for the next; once
// connected the client stays there; when that one goes, it moves on again.
func TestFailoverToTheNextBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens here: connection refused
	srv2 := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	h2 := &connects{wake: make(chan struct{})}
	if err := srv2.AddHook(h2, nil); err != nil {
		t.Fatal(err)
	}
	l2 := listeners.NewTCP(listeners.Config{ID: "t2", Address: "127.0.0.1:0"})
	if err := srv2.AddListener(l2); err != nil {
		t.Fatal(err)
	}
	if err := srv2.Serve(); err != nil {
		t.Fatal(err)
	}
	addr2 := l2.Address()
	_, h3, addr3 := broker(t, nil)
	c, _ := run(t, Options{
		BrokerURL: &url.URL{Scheme: "tcp", Host: dead},
		Fallbacks: []*url.URL{{Scheme: "tcp", Host: addr2}, {Scheme: "tcp", Host: addr3}},
	})
	h2.waitN(t, 1)
	waitOnBroker(t, c, "tcp://"+addr2)
	// The node it is on dies: the client carries on with the next one.
	srv2.Close()
	h3.waitN(t, 1)
	waitOnBroker(t, c, "tcp://"+addr3)
}

func waitOnBroker(t *testing.T, c *Client, broker string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.Connected() || c.Broker() != broker {
		if time.Now().After(deadline) {
			t.Fatalf("not connected to %s (connected %v to %s)", broker, c.Connected(), c.Broker())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}
