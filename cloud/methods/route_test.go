package methods

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// The whole cluster path runs in cloud/server's TestClusterDirectMethods (two nodes, PostgreSQL,
// paho boards). These check what a forwarded request carries and the node that cannot be reached,
// against a real HTTP server standing in for the device's node.

const testKey = "c2VydmljZS1rZXktZm9yLXRlc3RzLW9ubHktMzJieXRlcw=="

type fakeRouter struct {
	route hub.NodeRoute
	ok    bool
}

func (r fakeRouter) DeviceRoute(context.Context, string) (hub.NodeRoute, bool, error) {
	return r.route, r.ok, nil
}
func (fakeRouter) Policy(name string) (hub.Policy, bool) {
	return hub.Policy{Name: name, PrimaryKey: testKey, Rights: []hub.Permission{hub.ServiceConnect}}, name == ServicePolicy
}
func (fakeRouter) Node() string { return "a" }

type fakeRegistry struct{}

func (fakeRegistry) GetDevice(_ context.Context, id string) (iothub.Device, error) {
	return iothub.Device{DeviceID: id}, nil
}

type noSessions struct{}

func (noSessions) PublishMethod(string, string, []byte) (bool, error) { return false, nil }

func newRouted(r Router) *Service {
	s := New(fakeRegistry{}, nil)
	s.SetTransport(noSessions{})
	s.SetForwarder(NewForwarder(r, nil, nil))
	return s
}

func TestForwardCarriesServiceTokenAndMark(t *testing.T) {
	got := make(chan forwarded, 1)
	srv := nodeServer(t, "node-b", `{"status":207,"payload":{"x":1}}`, got)
	s := newRouted(fakeRouter{route: hub.NodeRoute{Node: "b", APIURL: srv.URL, HostName: "n2.example"}, ok: true})
	resp := 7
	res, err := s.Invoke(context.Background(), "pi 1", iothub.MethodRequest{MethodName: "state", ResponseTimeoutInSeconds: &resp})
	if err != nil || res.Status != 207 || string(res.Payload) != `{"x":1}` {
		t.Fatalf("Invoke = %+v, %v", res, err)
	}
	g := <-got
	if g.path != "/twins/pi%201/methods" || g.forwardedBy != "a" || g.req.MethodName != "state" ||
		g.req.ResponseTimeoutInSeconds == nil || *g.req.ResponseTimeoutInSeconds != 7 {
		t.Fatalf("forwarded request: %+v", g)
	}
	tok, err := iothub.ParseSASToken(g.auth)
	if err != nil || tok.KeyName != ServicePolicy || tok.Verify(testKey, "n2.example", time.Now()) != nil {
		t.Fatalf("token %q: %+v %v; want the service policy's, for n2.example", g.auth, tok, err)
	}
}

func TestForwardToUnreachableNodeIsNotOnline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s := newRouted(fakeRouter{route: hub.NodeRoute{Node: "b", APIURL: "http://" + addr, HostName: "n2.example"}, ok: true})
	_, err = s.Invoke(context.Background(), "pi-1", iothub.MethodRequest{MethodName: "state"})
	if !errors.Is(err, iothub.NotOnline("")) {
		t.Fatalf("Invoke with the device's node gone: %v; want 404103", err)
	}
	// Held nowhere: 404103 without any HTTP.
	s = newRouted(fakeRouter{})
	if _, err := s.Invoke(context.Background(), "pi-1", iothub.MethodRequest{MethodName: "state"}); !errors.Is(err, iothub.NotOnline("")) {
		t.Fatalf("Invoke for a device held nowhere: %v", err)
	}
}
