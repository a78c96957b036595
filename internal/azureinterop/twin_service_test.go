package azureinterop

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// svcResult is one JSON line of twin-service.js.
type svcResult struct {
	Step            string          `json:"step"`
	Outcome         string          `json:"outcome"`
	Status          int             `json:"status"`
	Payload         json.RawMessage `json:"payload"`
	ETag            string          `json:"etag"`
	Desired         map[string]any  `json:"desired"`
	Reported        map[string]any  `json:"reported"`
	Tags            map[string]any  `json:"tags"`
	ConnectionState string          `json:"connectionState"`
	DeviceStatus    string          `json:"deviceStatus"`
	Error           *struct {
		Name    string `json:"name"`
		Message string `json:"message"`
	} `json:"error"`
	raw string
}

// runService runs twin-service.js with steps against the hub over HTTPS and returns one result a step.
func runTwinService(t *testing.T, h *hub, steps ...string) []svcResult {
	t.Helper()
	cmd := exec.Command(nodeBin, append([]string{"twin-service.js"}, steps...)...)
	cmd.Dir = svcDir
	cmd.Env = append(os.Environ(), "C2D_SERVICE_CONNECTION_STRING="+h.Owner.String(), "C2D_CA_FILE="+h.Endpoints.CA,
		"C2D_HTTPS_ADDR="+h.Endpoints.HTTPS)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("twin-service.js: %v\n%s\n%s", err, out, stderr.String())
	}
	var res []svcResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		r := svcResult{raw: sc.Text()}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("twin-service.js printed %q", sc.Text())
		}
		res = append(res, r)
	}
	if len(res) != len(steps) {
		t.Fatalf("twin-service.js: %d results for %d steps:\n%s\n%s", len(res), len(steps), out, stderr.String())
	}
	return res
}

// Azure's Node service SDK against c2d-hub over HTTPS: Client.invokeDeviceMethod reaches a device
// on Azure's Node device SDK and returns its status and payload; a device that never answers ends
// in the SDK's GatewayTimeoutError (the hub ends the call; the SDK would wait forever);
// Registry.getTwin reads what the device reported; Registry.updateTwin with the SDK's quoted "*"
// merges desired properties, and a stale etag is the SDK's InvalidEtagError.
func TestServiceSDK(t *testing.T) {
	h := startHub(t)
	ctx := ctxT(t, 90*time.Second)
	dev := h.createDevice(t, ctx, "node-svc")
	h.createDevice(t, ctx, "node-svc-offline")
	d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, "mqtt"), transport: "mqtt", settle: "complete", methods: true, twin: true})
	d.expect("open")
	d.expect("twin")
	d.expect("desired")
	if _, err := d.stdin.Write([]byte(`{"outputs":{"relay1":{"state":"off"}}}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if ev := d.expect("reported"); ev.Outcome != "resolved" {
		t.Fatal(ev.raw)
	}
	// onDeviceMethod subscribes on its own schedule; the SDK device is online once it has answered.
	h.waitConnectionState(t, ctx, dev.DeviceID, "Connected")

	res := runTwinService(t, h,
		`invoke|node-svc|echo|{"x":1}|30`,
		`invoke|node-svc-offline|echo|null|5`,
		`invoke|node-svc|reboot|null|5`,
		`getTwin|node-svc`,
		`updateTwin|node-svc|{"tags":{"site":"north"},"properties":{"desired":{"outputs":{"relay1":"on"}}}}|*`,
	)
	if r := res[0]; r.Outcome != "resolved" || r.Status != 201 || string(r.Payload) != `{"got":{"x":1}}` {
		t.Errorf("invokeDeviceMethod echo: %s", r.raw)
	}
	if r := res[1]; r.Outcome != "rejected" || !strings.Contains(r.Error.Message+r.Error.Name, "ot found") {
		t.Errorf("invokeDeviceMethod to an offline device: %s", r.raw)
	}
	if r := res[2]; r.Outcome != "rejected" || r.Error.Name != "GatewayTimeoutError" {
		t.Errorf("invokeDeviceMethod without a device handler: %s, want GatewayTimeoutError", r.raw)
	}
	if r := res[3]; r.Outcome != "resolved" || r.ConnectionState != "Connected" || r.DeviceStatus != "enabled" ||
		r.Reported["outputs"].(map[string]any)["relay1"].(map[string]any)["state"] != "off" {
		t.Errorf("getTwin: %s", r.raw)
	}
	if r := res[4]; r.Outcome != "resolved" || r.Tags["site"] != "north" || r.Desired["outputs"].(map[string]any)["relay1"] != "on" {
		t.Errorf("updateTwin: %s", r.raw)
	}
	// The device heard the desired change.
	for ev := d.next(20 * time.Second); ; ev = d.next(20 * time.Second) {
		if ev.Event == "desired" && ev.Delta["outputs"] != nil {
			break
		}
	}
	stale := res[3].ETag
	if r := runTwinService(t, h, `updateTwin|node-svc|{"tags":{"x":1}}|`+stale)[0]; r.Outcome != "rejected" || r.Error.Name != "InvalidEtagError" {
		t.Errorf("updateTwin with a stale etag: %s, want InvalidEtagError", r.raw)
	}
	d.stop()
}
