package azureinterop

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Direct methods to a device on Azure's Node device SDK (client.onDeviceMethod), called through
// c2d-hub's POST /twins/{id}/methods: the handler runs with the payload as sent — a null payload
// included (the SDK answers an empty body with 400 itself, so the hub sends null) — and its
// status and payload come back to the caller; a method without a handler, which the SDK never
// answers, ends in 504101 GatewayTimeout from the hub; an offline device in 404103 DeviceNotOnline.
func TestSDKDirectMethods(t *testing.T) {
	h := startHub(t)
	ctx := ctxT(t, 60*time.Second)
	dev := h.createDevice(t, ctx, "node-sdk-methods")

	if _, err := h.Client.InvokeMethod(ctx, dev.DeviceID, iothub.MethodRequest{MethodName: "echo"}); !errors.Is(err, iothub.NotOnline("")) {
		t.Fatalf("offline device: %v, want 404103 DeviceNotOnline", err)
	}

	d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, "mqtt"), transport: "mqtt", settle: "complete", methods: true})
	d.expect("open")
	// onDeviceMethod subscribes asynchronously: the first call waits for it.
	wait := 20
	// The Node service SDK's body shape: payload null, both timeouts given.
	thirty := 30
	res, err := h.Client.InvokeMethod(ctx, dev.DeviceID, iothub.MethodRequest{MethodName: "echo", Payload: json.RawMessage("null"),
		ResponseTimeoutInSeconds: &thirty, ConnectTimeoutInSeconds: &wait})
	if err != nil {
		t.Fatalf("echo null: %v\n%s", err, d.stderr.String())
	}
	if ev := d.expect("method"); ev.MethodName != "echo" || string(ev.Payload) != "null" {
		t.Errorf("handler saw %s, want methodName echo and payload null", ev.raw)
	}
	if ev := d.expect("method_answered"); ev.Outcome != "resolved" {
		t.Errorf("response.send: %s", ev.raw)
	}
	if res.Status != 201 || string(res.Payload) != `{"got":null}` {
		t.Errorf("echo null answered %d %s, want 201 {\"got\":null}", res.Status, res.Payload)
	}

	payload := `{"target":"relay1","n":3,"nested":{"ok":true}}`
	res, err = h.Client.InvokeMethod(ctx, dev.DeviceID, iothub.MethodRequest{MethodName: "echo", Payload: json.RawMessage(payload)})
	if err != nil {
		t.Fatal(err)
	}
	if ev := d.expect("method"); string(ev.Payload) != payload {
		t.Errorf("handler payload %s, want %s", ev.Payload, payload)
	}
	d.expect("method_answered")
	if res.Status != 201 || string(res.Payload) != `{"got":`+payload+`}` {
		t.Errorf("echo answered %d %s", res.Status, res.Payload)
	}

	res, err = h.Client.InvokeMethod(ctx, dev.DeviceID, iothub.MethodRequest{MethodName: "fail"})
	if err != nil {
		t.Fatal(err)
	}
	d.expect("method")
	d.expect("method_answered")
	if res.Status != 409 || string(res.Payload) != `"relay1 is busy"` {
		t.Errorf("fail answered %d %s", res.Status, res.Payload)
	}

	// No handler for "reboot": the SDK stays silent; the hub ends the call at the timeout.
	five := 5
	start := time.Now()
	_, err = h.Client.InvokeMethod(ctx, dev.DeviceID, iothub.MethodRequest{MethodName: "reboot", ResponseTimeoutInSeconds: &five})
	if !errors.Is(err, &iothub.Error{Code: iothub.CodeGatewayTimeout}) {
		t.Fatalf("unhandled method: %v, want 504101 GatewayTimeout", err)
	}
	if took := time.Since(start); took < 5*time.Second || took > 15*time.Second {
		t.Errorf("the timeout took %v, want about 5s", took)
	}
	d.stop()
}
