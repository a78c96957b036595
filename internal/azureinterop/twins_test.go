package azureinterop

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Device twins with Azure's Node device SDK (client.getTwin, twin.on('properties.desired'),
// twin.properties.reported.update) against c2d-hub, the service side through its REST API: the
// SDK reads its twin, gets a desired change pushed, reports state that the service then reads,
// and sees a refused patch as an error (the hub's error answer carries a JSON errorCode body).
func TestSDKTwin(t *testing.T) {
	h := startHub(t)
	ctx := ctxT(t, 60*time.Second)
	dev := h.createDevice(t, ctx, "node-sdk-twin")
	d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, "mqtt"), transport: "mqtt", settle: "complete", twin: true})
	d.expect("open")
	tw := d.expect("twin")
	if tw.Desired["$version"] != float64(1) || tw.Reported["$version"] != float64(1) {
		t.Fatalf("getTwin: %s", tw.raw)
	}
	// Adding the desired listener makes the SDK subscribe; it reports the twin's desired once.
	if ev := d.expect("desired"); ev.Delta["$version"] != float64(1) {
		t.Fatalf("first desired event %s", ev.raw)
	}

	// The service sets desired state; the device hears the change. The subscription may still be
	// on its way: patch until the device hears one (each patch is a new $version).
	var got event
	for i := 0; got.Event == ""; i++ {
		if _, err := h.Client.UpdateTwin(ctx, dev.DeviceID, map[string]any{"properties": map[string]any{"desired": map[string]any{
			"outputs": map[string]any{"relay1": "on"}, "try": i}}}, ""); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-d.events:
			got = ev
		case <-time.After(2 * time.Second):
			if i == 5 {
				t.Fatal("no desired change reached the SDK")
			}
		}
	}
	if got.Event != "desired" || got.Delta["outputs"].(map[string]any)["relay1"] != "on" || got.Delta["$version"].(float64) < 2 {
		t.Fatalf("desired change %s", got.raw)
	}

	report := func(patch string) event {
		t.Helper()
		if _, err := fmt.Fprintln(d.stdin, patch); err != nil {
			t.Fatal(err)
		}
		return d.expect("reported")
	}
	if ev := report(`{"outputs":{"relay1":{"state":"on","since":"2026-12-03T07:00:00Z"}},"agent":{"version":"test"}}`); ev.Outcome != "resolved" {
		t.Fatalf("reported update: %s", ev.raw)
	}
	if ev := report(`{"agent":null,"bad":[1]}`); ev.Outcome != "rejected" {
		t.Fatalf("a refused reported patch resolved in the SDK: %s", ev.raw)
	}
	st, err := h.Client.GetTwin(ctx, dev.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := json.Marshal(st.Properties.Reported["outputs"])
	if string(rep) != `{"relay1":{"since":"2026-12-03T07:00:00Z","state":"on"}}` || st.Properties.Reported["agent"] == nil {
		t.Fatalf("service reads reported %v", st.Properties.Reported)
	}
	if _, err := fmt.Fprintln(d.stdin, "get"); err != nil {
		t.Fatal(err)
	}
	// twin.get fires the desired listener again with what it read, then resolves.
	ev := d.next(20 * time.Second)
	for ev.Event == "desired" {
		ev = d.next(20 * time.Second)
	}
	if ev.Event != "twin" || ev.Reported["$version"] != float64(2) || ev.Desired["outputs"] == nil {
		t.Fatalf("twin.get: %s", ev.raw)
	}
	d.stop()
}
