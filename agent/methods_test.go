package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/hw/simhw"
)

// startC2DHub runs a real c2d-hub in this process, on loopback ports, with the test board's
// device registered (connStr's key), and returns the owner's API client.
func startC2DHub(t *testing.T) (mqttAddr string, svc *apiclient.Client) {
	t.Helper()
	cfg := server.Default()
	cfg.DataDir = t.TempDir()
	cfg.HostName = "hub.local"
	cfg.Listen = server.Listen{MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", MQTTS: server.Off, HTTPS: server.Off, WS: server.Off, WSS: server.Off}
	s, err := server.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	p, _ := s.Hub().Policy("iothubowner")
	svc, err = apiclient.New(iothub.ServiceConnectionString{HostName: cfg.HostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey},
		apiclient.Options{Endpoint: "http://" + s.Endpoints().HTTP})
	must(t, err)
	dcs, err := iothub.ParseDeviceConnectionString(connStr)
	must(t, err)
	_, err = svc.CreateDevice(context.Background(), deviceID, dcs.SharedAccessKey, "")
	must(t, err)
	return s.Endpoints().MQTT, svc
}

type methodAnswer struct {
	status int
	out    iothub.MethodOutcome
	raw    json.RawMessage
}

func invoke(t *testing.T, svc *apiclient.Client, method, payload string) methodAnswer {
	t.Helper()
	req := iothub.MethodRequest{MethodName: method}
	if payload != "" {
		req.Payload = json.RawMessage(payload)
	}
	res, err := svc.InvokeMethod(context.Background(), deviceID, req)
	if err != nil {
		t.Fatalf("invoke %s %s: %v", method, payload, err)
	}
	a := methodAnswer{status: res.Status, raw: res.Payload}
	_ = json.Unmarshal(res.Payload, &a.out)
	return a
}

func boardState(t *testing.T, svc *apiclient.Client) iothub.BoardState {
	t.Helper()
	a := invoke(t, svc, "state", "")
	var st iothub.BoardState
	if a.status != 200 || json.Unmarshal(a.raw, &st) != nil {
		t.Fatalf("state: %d %s", a.status, a.raw)
	}
	return st
}

// TestAgentDirectMethods runs the agent against a real c2d-hub and calls its methods through the
// service API: `state` shows the board as the simulated hardware has it; actions and commands run
// under the config's allowlist with the same reasons as message rejections; a call that needs a
// busy output is refused at once with 409 instead of waiting.
func TestAgentDirectMethods(t *testing.T) {
	addr, svc := startC2DHub(t)
	b := newBoard(t, addr, "")
	startAgent(t, b)
	// READY means connected; the methods subscription follows the device-bound one: the first call
	// waits for it with connectTimeoutInSeconds.
	wait := 20
	res, err := svc.InvokeMethod(context.Background(), deviceID, iothub.MethodRequest{MethodName: "state", ConnectTimeoutInSeconds: &wait})
	must(t, err)
	var st iothub.BoardState
	must(t, json.Unmarshal(res.Payload, &st))
	if st.DeviceID != deviceID || st.Backend != "sim" || len(st.Outputs) != 3 || st.Outputs["relay1"].State != "off" ||
		st.UptimeSeconds <= 0 || len(st.ConfigHash) != 16 || st.Version == "" {
		t.Fatalf("state %+v", st)
	}

	if a := invoke(t, svc, "on", `{"target":"relay1"}`); a.status != 200 || a.out.Outcome != "done" || a.out.Plan != "on relay1" {
		t.Fatalf("on: %d %s", a.status, a.raw)
	}
	if hw, err := simhw.ReadState(b.stateFile); err != nil || !hw.Outputs["relay1"].On {
		t.Fatalf("simulated relay1 after the method: %+v %v", hw.Outputs["relay1"], err)
	}
	// The twin's reported properties follow (coalesced, at most one patch a second).
	deadline := time.Now().Add(20 * time.Second)
	for {
		tw, err := svc.GetTwin(context.Background(), deviceID)
		must(t, err)
		rep := tw.Properties.Reported
		if o, ok := rep["outputs"].(map[string]any)["relay1"].(map[string]any); ok && o["state"] == "on" {
			if a := rep["agent"].(map[string]any); a["backend"] != "sim" || len(a["configHash"].(string)) != 16 {
				t.Fatalf("reported agent %v", a)
			}
			if strings.Contains(fmt.Sprint(rep), "SharedAccessKey") {
				t.Fatalf("a secret in the twin: %v", rep)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reported properties never showed relay1 on: %v", rep)
		}
		time.Sleep(50 * time.Millisecond) // the reporter is asynchronous: poll what the service sees
	}
	st = boardState(t, svc)
	if o := st.Outputs["relay1"]; o.State != "on" || !o.Since.After(st.Started) || o.Busy {
		t.Fatalf("relay1 in state: %+v", o)
	}
	if n := len(st.LastCommands); n == 0 || st.LastCommands[n-1].Via != "method" || st.LastCommands[n-1].Outcome != "complete" {
		t.Fatalf("last commands %+v", st.LastCommands)
	}

	for _, c := range []struct {
		method, payload string
		status          int
		reason          string
	}{
		{"on", `{"target":"buzzer"}`, 400, `action "on" not allowed on buzzer (allowed: pulse, blink)`},
		{"on", `{"target":"relay9"}`, 400, `unknown target "relay9" (declared: act, relay1, buzzer)`},
		{"pulse", `{"target":"relay1","duration":"3h"}`, 400, "max_duration"},
		{"on", `[1]`, 400, "want a JSON object"},
		{"on", `{"target":"relay1","action":"off"}`, 400, "the method name"},
		{"dance", ``, 404, `no method "dance" on this board (methods: state, on, off, toggle, blink, pulse, identify)`},
	} {
		a := invoke(t, svc, c.method, c.payload)
		if a.status != c.status || !strings.Contains(a.out.Reason, c.reason) {
			t.Errorf("%s %s: %d %s; want %d with %q", c.method, c.payload, a.status, a.raw, c.status, c.reason)
		}
	}

	// A pulse holds relay1; an "off" meanwhile is refused at once, not queued behind it.
	pulse := make(chan methodAnswer, 1)
	go func() { pulse <- invoke(t, svc, "pulse", `{"target":"relay1","duration":"2s"}`) }()
	for !boardState(t, svc).Outputs["relay1"].Busy {
		select {
		case a := <-pulse:
			t.Fatalf("pulse ended before it was seen busy: %d %s", a.status, a.raw)
		default:
		}
	}
	start := time.Now()
	if a := invoke(t, svc, "off", `{"target":"relay1"}`); a.status != 409 || a.out.Outcome != "busy" || !strings.Contains(a.out.Reason, "relay1") {
		t.Fatalf("off while busy: %d %s", a.status, a.raw)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("the busy answer took %v: it waited for the pulse", waited)
	}
	if a := <-pulse; a.status != 200 || a.out.TookMs < 2000 {
		t.Fatalf("pulse: %d %s", a.status, a.raw)
	}
	if a := invoke(t, svc, "identify", ""); a.status != 200 || a.out.Outcome != "done" {
		t.Fatalf("identify: %d %s", a.status, a.raw)
	}
}

// TestAgentDesiredState: an output with `desired: true` follows the twin's desired state — on
// connect (a twin GET) and on each change — and names or values it cannot follow are reported in
// reported.desired.errors.
func TestAgentDesiredState(t *testing.T) {
	addr, svc := startC2DHub(t)
	b := newBoard(t, addr, "")
	yaml, err := os.ReadFile(b.configFile)
	must(t, err)
	y := strings.Replace(string(yaml), "    min_interval: 50ms\n", "    min_interval: 50ms\n    desired: true\n", 1)
	must(t, os.WriteFile(b.configFile, []byte(y), 0o644))
	b.cfg, err = config.Load(b.configFile)
	must(t, err)

	desire := func(outputs map[string]any) {
		t.Helper()
		if _, err := svc.UpdateTwin(context.Background(), deviceID, map[string]any{"properties": map[string]any{"desired": map[string]any{"outputs": outputs}}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Set while the board is offline: applied when it connects.
	desire(map[string]any{"relay1": "on", "relay9": "on", "act": "on"})
	startAgent(t, b)
	waitState(t, b.stateFile, "relay1 on (desired before connecting)", func(s simhw.State) bool { return s.Outputs["relay1"].On })
	errs := waitReported(t, svc, "errors for relay9 and act", func(rep map[string]any) bool {
		e, _ := rep["desired"].(map[string]any)["errors"].(map[string]any)
		return e["relay9"] != nil && e["act"] != nil
	})
	if !strings.Contains(fmt.Sprint(errs), `no output "act" follows desired state`) {
		t.Errorf("reported %v", errs)
	}
	if hw, _ := simhw.ReadState(b.stateFile); hw.Outputs["act"].On {
		t.Error("act does not follow desired state but was switched on")
	}

	desire(map[string]any{"relay1": "off"})
	waitState(t, b.stateFile, "relay1 off (desired change)", func(s simhw.State) bool { return !s.Outputs["relay1"].On })
	desire(map[string]any{"relay1": "maybe"})
	waitReported(t, svc, "an error for relay1's value", func(rep map[string]any) bool {
		e, _ := rep["desired"].(map[string]any)["errors"].(map[string]any)
		s, _ := e["relay1"].(string)
		return strings.Contains(s, `"maybe" is not "on" or "off"`)
	})
}

// waitReported polls the twin until its reported properties satisfy cond (the agent reports
// asynchronously, at most once a second).
func waitReported(t *testing.T, svc *apiclient.Client, what string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tw, err := svc.GetTwin(context.Background(), deviceID)
		must(t, err)
		if _, ok := tw.Properties.Reported["desired"].(map[string]any); ok && cond(tw.Properties.Reported) {
			return tw.Properties.Reported
		}
		if time.Now().After(deadline) {
			t.Fatalf("reported properties never showed %s: %v", what, tw.Properties.Reported)
		}
		time.Sleep(50 * time.Millisecond) // polling what the service sees
	}
}
