package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// routedPair is two nodes on one store, b advertising its API at https://10.0.0.2:8443 for
// n2.example.
func routedPair(t *testing.T) (a, b *Hub) {
	t.Helper()
	url := pgtest.DB(t)
	a, b = openNode(t, url, "a"), openNode(t, url, "b")
	if err := b.AdvertiseAPI(context.Background(), "https://10.0.0.2:8443", "n2.example"); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestDeviceRoute: the node holding a device's session is found through any other node, with the
// API address it advertised; the holder itself, a device held nowhere and a node that left get no
// route, and a hub on its own store routes nothing.
func TestDeviceRoute(t *testing.T) {
	parallel(t)
	a, b := routedPair(t)
	ctx := context.Background()
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

// A wake-up with many desired changes is split into NOTIFY payloads under PostgreSQL's limit, each
// change in exactly one of them, patches intact; a patch of exactly maxWakePatch bytes is carried,
// a larger one is announced without it.
func TestSplitDesiredWake(t *testing.T) {
	patch := []byte(`{"$version":7,"note":"` + strings.Repeat("x", maxWakePatch-30) + `"}`)
	w := wake{Node: "a", Kick: []string{"k"}}
	for i := range 20 {
		w.Desired = append(w.Desired, desiredWake{Device: fmt.Sprintf("pi-%d", i), Version: 7, Patch: patch})
	}
	seen := map[string]int{}
	for _, p := range split(w) {
		if len(p) > maxNotifyPayload {
			t.Fatalf("payload of %d bytes, over %d", len(p), maxNotifyPayload)
		}
		var got wake
		if err := json.Unmarshal([]byte(p), &got); err != nil {
			t.Fatal(err)
		}
		for _, d := range got.Desired {
			if d.Version != 7 || !bytes.Equal(d.Patch, patch) {
				t.Fatalf("%s: version %d, patch of %d bytes", d.Device, d.Version, len(d.Patch))
			}
			seen[d.Device]++
		}
	}
	if len(seen) != 20 {
		t.Fatalf("%d of 20 changes arrived", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s in %d payloads", id, n)
		}
	}

	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	got := make(chan desiredWake, 3)
	b.OnDesiredChange(func(id string, v int64, p []byte) { got <- desiredWake{Device: id, Version: v, Patch: p} })
	edge := []byte(`{"$version":5,"e":"` + strings.Repeat("z", maxWakePatch-len(`{"$version":5,"e":""}`)) + `"}`) // exactly the limit
	a.PublishDesiredChange("pi-1", 3, []byte(`{"$version":3,"a":1}`))
	a.PublishDesiredChange("pi-2", 4, []byte(`{"$version":4,"big":"`+strings.Repeat("y", maxWakePatch)+`"}`))
	a.PublishDesiredChange("pi-3", 5, edge)
	for _, want := range []desiredWake{{"pi-1", 3, []byte(`{"$version":3,"a":1}`)}, {"pi-2", 4, nil}, {"pi-3", 5, edge}} {
		select {
		case d := <-got:
			if d.Device != want.Device || d.Version != want.Version || !bytes.Equal(d.Patch, want.Patch) {
				t.Fatalf("b heard %s v%d %q; want %s v%d %q", d.Device, d.Version, d.Patch, want.Device, want.Version, want.Patch)
			}
		case <-time.After(waitLimit):
			t.Fatalf("b heard nothing of %s", want.Device)
		}
	}
}

// A route is only to a node that advertises its API and is alive: its heartbeat younger than the
// node timeout, as the asking node's clock tells (at exactly the timeout it is not alive, as
// everywhere in the cluster).
func TestDeviceRouteOnlyToAliveAdvertisingNodes(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	open := func(node string, clk *manualClock) *Hub {
		cfg := testConfig()
		cfg.Store, cfg.NodeID, cfg.Clock = url, node, clk
		return openHub(t, t.TempDir(), cfg)
	}
	ca, cb := newManualClock(), newManualClock()
	a, b, quiet := open("a", ca), open("b", cb), open("quiet", cb)
	ctx := ctxT(t)
	if err := b.AdvertiseAPI(ctx, "https://10.0.0.2:8443", "n2.example"); err != nil {
		t.Fatal(err)
	}
	mustDevice(t, a, "pi-1")
	mustDevice(t, a, "pi-2")
	b.Attach(newConn("pi-1"))
	quiet.Attach(newConn("pi-2")) // held by a node that advertises no API

	if r, ok, err := a.DeviceRoute(ctx, "pi-2"); err != nil || ok {
		t.Fatalf("route to pi-2 on a node advertising no API: %+v %v %v; want none", r, ok, err)
	}
	ca.Advance(nodeTimeout - time.Millisecond)
	if _, ok, err := a.DeviceRoute(ctx, "pi-1"); err != nil || !ok {
		t.Fatalf("no route to pi-1 with b's heartbeat just under the node timeout old: %v %v", ok, err)
	}
	ca.Advance(time.Millisecond)
	if r, ok, err := a.DeviceRoute(ctx, "pi-1"); err != nil || ok {
		t.Fatalf("route to pi-1 with b's heartbeat the node timeout old: %+v %v %v; want none", r, ok, err)
	}
}

// A device that disconnects from a node with nothing in flight gives up its session there: the
// other nodes route its direct methods nowhere instead of to the node it left.
func TestDeviceThatLeftWithNothingInFlightIsRoutedNowhere(t *testing.T) {
	parallel(t)
	a, b := routedPair(t)
	ctx := context.Background()
	mustDevice(t, a, "pi-1")
	c := newConn("pi-1")
	b.Attach(c)
	if _, ok, err := a.DeviceRoute(ctx, "pi-1"); err != nil || !ok {
		t.Fatalf("route to pi-1 while it is on b: %v %v", ok, err)
	}
	b.Detach(c)
	if r, ok, err := a.DeviceRoute(ctx, "pi-1"); err != nil || ok {
		t.Fatalf("route to pi-1 after it left b: %+v %v %v; want none", r, ok, err)
	}
}
