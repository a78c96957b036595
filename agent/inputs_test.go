package agent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw/simhw"
)

// TestAgentInputs: a simulated door contact changes; the agent shows it in the state method and
// reports it in the twin (coalesced), with since when.
func TestAgentInputs(t *testing.T) {
	addr, svc := startC2DHub(t)
	b := newBoard(t, addr, `inputs:
  door:
    pin: GPIO22
    pull: up
    active_low: true
  pir:
    chip: pinctrl-rp1
    line: 6
`)
	must(t, simhw.WriteInputs(b.inputsFile, map[string]bool{"pir": true}))
	startAgent(t, b)
	// The methods subscription follows READY: the first call waits for it.
	wait := 20
	res, err := svc.InvokeMethod(context.Background(), deviceID, iothub.MethodRequest{MethodName: "state", ConnectTimeoutInSeconds: &wait})
	must(t, err)
	var st iothub.BoardState
	must(t, json.Unmarshal(res.Payload, &st))
	if len(st.Inputs) != 2 || st.Inputs["door"].State != "off" || st.Inputs["pir"].State != "on" {
		t.Fatalf("inputs at start: %+v", st.Inputs)
	}
	closed := time.Now()
	must(t, simhw.WriteInputs(b.inputsFile, map[string]bool{"door": true, "pir": true}))

	// The twin follows: reported.inputs.door {state: on, since: the change}.
	deadline := time.Now().Add(20 * time.Second)
	for {
		tw, err := svc.GetTwin(context.Background(), deviceID)
		must(t, err)
		ins, _ := tw.Properties.Reported["inputs"].(map[string]any)
		door, _ := ins["door"].(map[string]any)
		if door["state"] == "on" {
			since, err := time.Parse(time.RFC3339Nano, door["since"].(string))
			if err != nil || since.Before(closed.Add(-time.Millisecond)) {
				t.Fatalf("reported door since %v (%v); the change was at %v", door["since"], err, closed)
			}
			if pir, _ := ins["pir"].(map[string]any); pir["state"] != "on" {
				t.Fatalf("reported pir %v", pir)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reported properties never showed the door on: %v", tw.Properties.Reported)
		}
		time.Sleep(50 * time.Millisecond) // the reporter is asynchronous: poll what the service sees
	}
	st = boardState(t, svc)
	if d := st.Inputs["door"]; d.State != "on" || d.Since.Before(closed.Add(-time.Millisecond)) || !d.Since.After(st.Started) {
		t.Fatalf("door in state: %+v (started %v)", d, st.Started)
	}
	if _, isOutput := st.Outputs["door"]; isOutput {
		t.Fatal("an input shows as an output")
	}
}
