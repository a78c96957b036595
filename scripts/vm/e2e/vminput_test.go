//go:build vmgpio

package e2e_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/testproc"
)

const doorLine = 22 // GPIO22: a door contact to ground, pull-up, active-low

// TestVMAgentReportsInput: the whole agent on a real kernel reads a door contact. The contact is
// gpio-sim's pull attribute; the operator sees the change in the state method and in the twin.
func TestVMAgentReportsInput(t *testing.T) {
	h := startHub(t)
	dev, err := h.api.CreateDevice(ctxT(t, 10*time.Second), "pi-5-door", "", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, h.ep.MQTT, dev.DeviceID, dev.Authentication.SymmetricKey.PrimaryKey, `inputs:
  door:
    pin: GPIO22
    pull: up
    active_low: true
    debounce: 20ms
`)
	// The door is open: the outside world leaves the line to the pull-up the agent asks for.
	if err := rp1.SetPull(doorLine, true); err != nil {
		t.Fatal(err)
	}
	sock, notes := testproc.NotifySocket(t)
	agent := start(t, "c2d-agent", []string{"NOTIFY_SOCKET=" + sock}, "--config", cfg)
	waitReadyNote(t, agent, notes)

	state := func(t *testing.T) iothub.BoardState {
		t.Helper()
		wait := 30
		res, err := h.api.InvokeMethod(ctxT(t, 60*time.Second), dev.DeviceID, iothub.MethodRequest{MethodName: "state", ConnectTimeoutInSeconds: &wait})
		if err != nil || res.Status != 200 {
			t.Fatalf("state: %v %d %s", err, res.Status, res.Payload)
		}
		var st iothub.BoardState
		if err := json.Unmarshal(res.Payload, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if d := state(t).Inputs["door"]; d.State != "off" {
		t.Fatalf("door at start-up: %+v; want off (open)", d)
	}

	closedAt := time.Now()
	if err := rp1.SetPull(doorLine, false); err != nil { // the contact closes: the line goes low
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the state method shows the door on", func() bool { return state(t).Inputs["door"].State == "on" })
	if d := state(t).Inputs["door"]; d.Since.Before(closedAt.Add(-time.Second)) {
		t.Errorf("door since %v, the contact closed at %v", d.Since, closedAt)
	}
	waitFor(t, 20*time.Second, "the twin reports the door on", func() bool {
		tw, err := h.api.GetTwin(ctxT(t, 10*time.Second), dev.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		ins, _ := tw.Properties.Reported["inputs"].(map[string]any)
		door, _ := ins["door"].(map[string]any)
		return door["state"] == "on"
	})
	if !strings.Contains(agent.out.String(), "input changed") {
		t.Errorf("the agent did not log the change:\n%s", agent.out.String())
	}

	if err := rp1.SetPull(doorLine, true); err != nil { // open again
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the state method shows the door off again", func() bool { return state(t).Inputs["door"].State == "off" })
}

// An input naming a line the board does not have, or an output's line under another name, stops
// the agent at start-up naming the input's config path, before anything moves.
func TestVMAgentRefusesBadInput(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown pin", "inputs:\n  door:\n    pin: GPIO99\n", `inputs.door.pin: no line "GPIO99"`},
		{"an output's line", "inputs:\n  door:\n    chip: pinctrl-rp1\n    line: 17\n", `inputs.door.line: pinctrl-rp1 (gpiochip`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := writeConfig(t, "127.0.0.1:1", "pi-5", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", c.yaml)
			agent := start(t, "c2d-agent", nil, "--config", cfg)
			if code := agent.wait(t, 30*time.Second); code == 0 {
				t.Fatalf("c2d-agent exited 0\n%s", agent.out.String())
			}
			out := agent.out.String()
			if !strings.Contains(out, c.want) {
				t.Errorf("start-up error should say %q:\n%s", c.want, out)
			}
			if c.name == "an output's line" && !strings.Contains(out, "already used by output relay1") {
				t.Errorf("start-up error should name relay1:\n%s", out)
			}
		})
	}
}
