package methods

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Pins found by cloud/methods' mutants (docs/testing.md). The whole path runs against real
// devices in cloud/server; these use this file's neighbours' stand-ins for the cluster's router.

// movingRouter is a router whose answer the test changes: the device's node moves, the service
// policy's key is rotated.
type movingRouter struct {
	mu    sync.Mutex
	route hub.NodeRoute
	key   string
}

func (r *movingRouter) DeviceRoute(context.Context, string) (hub.NodeRoute, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.route, true, nil
}
func (r *movingRouter) Policy(name string) (hub.Policy, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return hub.Policy{Name: name, PrimaryKey: r.key, Rights: []hub.Permission{hub.ServiceConnect}}, name == ServicePolicy
}
func (r *movingRouter) Node() string { return "a" }

type forwarded struct {
	server, path, forwardedBy, auth string
	req                             iothub.MethodRequest
}

// nodeServer stands in for another node's service API: it records each forwarded call and gives
// answer.
func nodeServer(t *testing.T, name, answer string, got chan<- forwarded) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req iothub.MethodRequest
		_ = json.Unmarshal(b, &req)
		got <- forwarded{name, r.URL.EscapedPath(), r.Header.Get(iothub.ForwardedHeader), r.Header.Get("Authorization"), req}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A forwarded call gets what is left of its connect timeout, leaves no waiter behind, and
// follows the device's node when it moves and the policy's key when it is rotated.
func TestForwardFollowsTheNodeAndTheKey(t *testing.T) {
	got := make(chan forwarded, 4)
	const ok = `{"status":200,"payload":null}`
	a, b := nodeServer(t, "node-b", ok, got), nodeServer(t, "node-c", ok, got)
	r := &movingRouter{route: hub.NodeRoute{Node: "b", APIURL: a.URL, HostName: "n2.example"}, key: testKey}
	s := newRouted(r)
	wait := 30
	invoke := func() forwarded {
		t.Helper()
		if _, err := s.Invoke(context.Background(), "pi-1", iothub.MethodRequest{MethodName: "state", ConnectTimeoutInSeconds: &wait}); err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		return <-got
	}

	f := invoke()
	if c := f.req.ConnectTimeoutInSeconds; c == nil || *c >= wait || *c < wait-1 {
		t.Errorf("forwarded connectTimeoutInSeconds %v; want what is left of %d s (%d)", c, wait, wait-1)
	}
	if n := s.Waiting("pi-1"); n != 0 {
		t.Errorf("after a forwarded call with a connect timeout: %d waiters left", n)
	}

	r.mu.Lock()
	r.route = hub.NodeRoute{Node: "b", APIURL: b.URL, HostName: "n2.example"} // node b restarted on another address
	r.mu.Unlock()
	if f := invoke(); f.server != "node-c" {
		t.Fatalf("after the node moved the call went to %s", f.server)
	}

	const rotated = "cm90YXRlZC1zZXJ2aWNlLWtleS1mb3ItdGVzdHMtMzJieQ=="
	r.mu.Lock()
	r.key = rotated
	r.mu.Unlock()
	f = invoke()
	tok, err := iothub.ParseSASToken(f.auth)
	if err != nil || tok.Verify(rotated, "n2.example", time.Now()) != nil {
		t.Fatalf("after the key was rotated: token %q (%v); want it signed with the new key", f.auth, err)
	}
}

// A node that takes the call and never answers: after the call's timeouts and the margin for the
// HTTP exchange, 504101 naming the node and how long it waited. The caller's own cancellation is
// its error, not a timeout.
func TestForwardToSilentNode(t *testing.T) {
	t.Parallel() // 11 s: Azure's shortest response timeout, 1 s to connect and the 5 s margin
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	s := newRouted(fakeRouter{route: hub.NodeRoute{Node: "b", APIURL: srv.URL, HostName: "n2.example"}, ok: true})
	f := s.forwarder.Load()

	began := time.Now()
	_, handled, err := f.forward(context.Background(), "pi-1", iothub.MethodRequest{MethodName: "state"}, 5*time.Second, time.Second)
	// A lower bound only: the node is given the call's whole time before the caller hears 504101.
	if el := time.Since(began); el < 11*time.Second {
		t.Errorf("forward gave up after %v; want the response and connect timeouts plus the margin, 11s", el)
	}
	var ae *iothub.Error
	if !handled || !errors.As(err, &ae) || ae.Code != iothub.CodeGatewayTimeout ||
		!strings.Contains(ae.Detail, "node b") || !strings.Contains(ae.Detail, "(11s)") {
		t.Fatalf("forward to a silent node: handled %v, %v; want 504101 naming node b and 11s", handled, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller left (its request ended): the forward is not even sent
	if _, handled, err := f.forward(ctx, "pi-1", iothub.MethodRequest{MethodName: "state"}, time.Minute, time.Second); !handled || !errors.Is(err, context.Canceled) {
		t.Fatalf("forward whose caller left: handled %v, %v; want context.Canceled", handled, err)
	}
}

// oneSession is a device session that takes every request and answers it at once.
type oneSession struct {
	s *Service
}

var ridIn = regexp.MustCompile(`\$rid=([0-9a-f]+)$`)

func (o oneSession) PublishMethod(deviceID, topic string, _ []byte) (bool, error) {
	rid := ridIn.FindStringSubmatch(topic)[1]
	go o.s.MethodResponse(deviceID, rid, 200, []byte(`"done"`))
	return true, nil
}

// New without a logger logs nowhere, and a call through it works (no nil logger to trip on).
func TestNewWithoutLogger(t *testing.T) {
	s := New(fakeRegistry{}, nil)
	s.SetTransport(oneSession{s})
	res, err := s.Invoke(context.Background(), "pi-1", iothub.MethodRequest{MethodName: "state"})
	if err != nil || res.Status != 200 || string(res.Payload) != `"done"` {
		t.Fatalf("Invoke = %+v, %v", res, err)
	}
}

// A node that accepts the connection and never starts TLS (hung, or not the API at all) is a node
// that cannot be reached: 404103 once the TLS handshake times out (5 s), not 504101 after the
// call's whole time — the device is as good as offline and reconnects elsewhere.
func TestForwardToNodeThatNeverHandshakes(t *testing.T) {
	t.Parallel() // 5 s: the forwarder's TLS handshake timeout
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the listener closed: the deferred closes run
			}
			defer c.Close() // held open, never read or written
		}
	}()
	s := newRouted(fakeRouter{route: hub.NodeRoute{Node: "b", APIURL: "https://" + ln.Addr().String(), HostName: "n2.example"}, ok: true})
	_, handled, err := s.forwarder.Load().forward(context.Background(), "pi-1", iothub.MethodRequest{MethodName: "state"}, 20*time.Second, 0)
	if !handled || !errors.Is(err, iothub.NotOnline("")) || !strings.Contains(err.Error(), "TLS handshake timeout") {
		t.Fatalf("forward to a node that never handshakes: handled %v, %v; want 404103 after the TLS handshake timeout", handled, err)
	}
}
