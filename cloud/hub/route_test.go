package hub

import (
	"context"
	"testing"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestDeviceRoute: the node holding a device's session is found through any other node, with the
// API address it advertised; the holder itself, a device held nowhere and a node that left get no
// route, and a hub on its own store routes nothing.
func TestDeviceRoute(t *testing.T) {
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	ctx := context.Background()
	if err := b.AdvertiseAPI(ctx, "https://10.0.0.2:8443", "n2.example"); err != nil {
		t.Fatal(err)
	}
	mustDevice(t, a, "pi-1")
	mustDevice(t, a, "pi-2")
	b.Attach(newConn("pi-1"))

	r, ok, err := a.DeviceRoute(ctx, "pi-1")
	if err != nil || !ok || r != (NodeRoute{Node: "b", APIURL: "https://10.0.0.2:8443", HostName: "n2.example"}) {
		t.Fatalf("route to pi-1 through a: %+v %v %v", r, ok, err)
	}
	for _, c := range []struct {
		via *Hub
		dev string
	}{{b, "pi-1"}, {a, "pi-2"}, {a, "nobody"}} {
		if r, ok, err := c.via.DeviceRoute(ctx, c.dev); err != nil || ok {
			t.Fatalf("route to %s through %s: %+v %v %v; want none", c.dev, c.via.Node(), r, ok, err)
		}
	}
	st, err := a.Status(ctx)
	if err != nil || len(st.Nodes) != 2 || st.Nodes[1].APIURL != "https://10.0.0.2:8443" || st.Nodes[0].APIURL != "" {
		t.Fatalf("status: %+v, %v", st.Nodes, err)
	}

	b.Close() // a clean shutdown releases its devices and removes its row
	if r, ok, err := a.DeviceRoute(ctx, "pi-1"); err != nil || ok {
		t.Fatalf("route to pi-1 after b left: %+v %v %v", r, ok, err)
	}

	single := openHub(t, t.TempDir(), testConfig())
	if err := single.AdvertiseAPI(ctx, "http://127.0.0.1:1", "x"); err != nil || single.Node() != "" {
		t.Fatalf("single hub: node %q, advertise %v", single.Node(), err)
	}
	if _, ok, err := single.DeviceRoute(ctx, "pi-1"); ok || err != nil {
		t.Fatalf("single hub routes: %v %v", ok, err)
	}
}
