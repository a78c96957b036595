package azureinterop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/testproc"
)

// Tested with (keep in step with testdata/sdk-service/package-lock.json):
//
//	azure-iothub          1.16.6  (Registry over HTTPS; Client send and feedback over AMQP)
//	azure-iot-device-amqp 1.14.4  (device transports Amqp and AmqpWs)
//
// service.js points the SDKs at the test's ports (Azure's are 443 and 5671): see its header.
var serviceSDK = map[string]string{"azure-iothub": "1.16.6", "azure-iot-device-amqp": "1.14.4"}

type step struct {
	Step        string            `json:"step"`
	Error       string            `json:"error"`
	Name        string            `json:"name"`
	IDs         []string          `json:"ids"`
	Status      string            `json:"status"`
	EtagChanged bool              `json:"etagChanged"`
	Body        string            `json:"body"`
	MessageID   string            `json:"messageId"`
	Props       map[string]string `json:"props"`
	Delivery    int               `json:"delivery"`
	ContentType string            `json:"contentType"`
	Record      map[string]any    `json:"record"`
	Errors      map[string]string `json:"errors"`
	Correlation string            `json:"correlationId"`
	Encoding    string            `json:"contentEncoding"`
	HasExpiry   bool              `json:"hasExpiry"`
	Cause       string            `json:"cause"`  // the class of err.amqpError
	Detail      string            `json:"detail"` // err.amqpError's message
	PastExpiry  int               `json:"pastExpiryMs"`
}

// runService runs service.js against a fresh hub with the device on transport; it returns the
// script's steps and, read over HTTP once it ended, a feedback batch still pending (nil if none).
func runService(t *testing.T, transport string) ([]step, *iothub.FeedbackBatch) {
	t.Helper()
	h := testproc.StartHub(t, hubBin, testproc.HubOptions{Args: []string{
		"--hostname", "localhost", "--log-level", "debug",
		"--mqtt", "off", "--mqtts", "127.0.0.1:0", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
		"--amqps", "127.0.0.1:0"}})
	steps := runScript(t, h, "service.js",
		"HUB_HOST=localhost", "OWNER_KEY="+h.Owner.SharedAccessKey,
		"HTTPS_PORT="+port(h.Endpoints.HTTPS), "AMQPS_PORT="+port(h.Endpoints.AMQPS), "MQTTS_PORT="+port(h.Endpoints.MQTTS),
		"DEVICE_TRANSPORT="+transport, "NODE_EXTRA_CA_CERTS="+h.Endpoints.CA)
	left, err := h.Client.ReceiveFeedback(ctxT(t, 10*time.Second), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return steps, left
}

// runScript runs a script of testdata/sdk-service with env and returns its steps; it fails the
// test, with the script's output and the hub's log, if the script exits non-zero.
func runScript(t *testing.T, h *testproc.Hub, script string, env ...string) []step {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, script)
	cmd.Dir = svcDir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var steps []step
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var s step
		if json.Unmarshal(sc.Bytes(), &s) == nil {
			steps = append(steps, s)
		}
	}
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s\nhub log:\n%s", script, err, out, stderr.String(), h.Log.String())
	}
	return steps
}

func find(steps []step, name string) []step {
	var r []step
	for _, s := range steps {
		if s.Step == name {
			r = append(r, s)
		}
	}
	return r
}

// The "done when": a backend on Azure's Node service SDK — Registry CRUD, Client.send with
// ack full, getFeedbackReceiver — works unchanged against c2d-hub, with the device on Azure's AMQP
// device transport, over AMQP over WebSockets on the HTTPS port (service and device both on
// AmqpWs), and with the device on MQTT.
func TestServiceSDKWithDevice(t *testing.T) {
	for _, transport := range []string{"amqp", "amqpws", "mqtt"} {
		t.Run(transport, func(t *testing.T) {
			steps, left := runService(t, transport)
			id := "sdk-" + transport
			if l := find(steps, "list"); len(l) != 1 || !slices.Contains(l[0].IDs, id) {
				t.Errorf("Registry.list: %+v, want it to contain %s", l, id)
			}
			if q := find(steps, "query"); len(q) != 1 || !slices.Equal(q[0].IDs, []string{id, id + "-gone"}) {
				t.Errorf("Registry.createQuery paged by 1: %+v, want [%s %s-gone]", q, id, id)
			}
			wantErrs := map[string]string{"exists": "DeviceAlreadyExistsError", "missing": "DeviceNotFoundError", "delete-missing": "DeviceNotFoundError"}
			if r := find(steps, "registry-errors"); len(r) != 1 || !maps.Equal(r[0].Errors, wantErrs) {
				t.Errorf("Registry errors %+v, want %v", r, wantErrs)
			}
			if b := find(steps, "bad-key"); len(b) != 1 || b[0].Name != "UnauthorizedError" || !strings.Contains(b[0].Error, "signature") {
				t.Errorf("open with a wrong key: %+v, want UnauthorizedError saying the signature does not match", b)
			}
			if u := find(steps, "update"); len(u) != 1 || u[0].Status != "enabled" || !u[0].EtagChanged {
				t.Errorf("Registry.update: %+v", u)
			}
			if u := find(steps, "send-unknown"); len(u) != 1 || u[0].Name != "DeviceNotFoundError" {
				t.Errorf("send to an unknown device: %+v, want DeviceNotFoundError", u)
			}
			got := map[string]int{}
			for _, m := range find(steps, "device-message") {
				got[m.Body]++
				// Every field Client.send takes, as the device SDK hands it to the application.
				if m.MessageID != "m-"+m.Body || m.Props["cmd"] != m.Body || m.Correlation != "c-"+m.Body ||
					m.ContentType != "text/plain" || m.Encoding != "utf-8" || !m.HasExpiry {
					t.Errorf("device got %+v", m)
				}
			}
			want := map[string]string{"m-complete": "Success", "m-reject": "Rejected", "m-abandon": "Success"}
			if transport == "mqtt" {
				// Azure's MQTT transport only completes.
				want["m-reject"] = "Success"
				if got["complete"] != 1 || got["reject"] != 1 || got["abandon"] != 1 {
					t.Errorf("deliveries %v, want one of each", got)
				}
			} else if got["complete"] != 1 || got["reject"] != 1 || got["abandon"] != 2 {
				t.Errorf("deliveries %v, want complete 1, reject 1, abandon 2 (abandoned once)", got)
			}
			status := map[string]string{}
			for _, f := range find(steps, "feedback") {
				if f.ContentType != "application/vnd.microsoft.iothub.feedback.json" {
					t.Errorf("feedback content type %q", f.ContentType)
				}
				mid, _ := f.Record["originalMessageId"].(string)
				st, _ := f.Record["statusCode"].(string)
				status[mid] = st
				if f.Record["deviceId"] != id {
					t.Errorf("feedback record %v: deviceId", f.Record)
				}
			}
			// The SDK accepts each batch on arrival; its later abandon is a second disposition,
			// which the hub ignores: every record once, none left for another reader.
			if a := find(steps, "feedback-abandon"); len(a) != 1 {
				t.Errorf("feedback receiver abandon: %+v", a)
			}
			if n := len(find(steps, "feedback")); n != len(want) {
				t.Errorf("%d feedback records read, want %d (each once)", n, len(want))
			}
			if left != nil {
				t.Errorf("feedback batch %+v still pending after the SDK accepted it", left)
			}
			for k, v := range want {
				if status[k] != v {
					t.Errorf("feedback for %s: %q, want %q (all: %v)", k, status[k], v, status)
				}
			}
			if d := find(steps, "done"); len(d) != 1 {
				t.Errorf("service.js did not finish: %s", strings.Join(names(steps), ","))
			}
		})
	}
}

func names(steps []step) []string {
	var r []string
	for _, s := range steps {
		r = append(r, s.Step)
	}
	return r
}
