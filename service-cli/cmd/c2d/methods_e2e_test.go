package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// answerMethods makes d answer direct methods as a c2d agent would: state with a board state,
// pulse with a 400 refusal; any other method is never answered.
func answerMethods(t *testing.T, d *device) {
	t.Helper()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	state, _ := json.Marshal(iothub.BoardState{DeviceID: d.id, Version: "test", Backend: "sim", Started: since, UptimeSeconds: 42,
		Outputs:      map[string]iothub.OutputState{"relay1": {State: "on", Since: since}, "act": {State: "off", Since: since, Busy: true}},
		Inputs:       map[string]iothub.InputState{"door": {State: "closed", Since: since}},
		LastCommands: []iothub.CommandRecord{{Via: "method", ID: "on", What: "on relay1", Outcome: "complete", At: since}}})
	refusal, _ := json.Marshal(iothub.MethodOutcome{Outcome: "rejected", Reason: `action "pulse" not allowed on relay1 (allowed: on, off)`})
	tk := d.c.Subscribe(iothub.MethodsFilter, 0, func(c mqtt.Client, m mqtt.Message) {
		name, rid, err := iothub.ParseMethodRequestTopic(m.Topic())
		if err != nil {
			t.Errorf("method topic %q: %v", m.Topic(), err)
			return
		}
		go func() { // paho: never block in a handler
			switch name {
			case "state":
				c.Publish(iothub.MethodResponseTopic(200, rid), 0, false, state)
			case "pulse":
				c.Publish(iothub.MethodResponseTopic(400, rid), 0, false, refusal)
			}
		}()
	})
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("device %s subscribe to methods: %v", d.id, tk.Error())
	}
}

// TestInvokeAndState runs `c2d invoke` and `c2d state` against a real hub and a real MQTT device:
// what a technician sees and the exit codes scripts rely on (0 answered 2xx, 12 other status,
// 11 offline, 7 no answer in time, 2 bad payload).
func TestInvokeAndState(t *testing.T) {
	t.Parallel()
	id := newDevice(t, "meth")

	r := must(t, 11, "invoke", id, "state")
	if !strings.Contains(r.stderr, "is not connected") {
		t.Errorf("offline invoke: %s", r)
	}
	r = must(t, 11, "state", id)
	if !strings.Contains(r.stdout, id+" is offline (connection Disconnected") {
		t.Errorf("offline state: %s", r)
	}
	var off map[string]any
	jsonOut(t, &off, 11, "state", id)
	if off["online"] != false || off["connectionState"] != "Disconnected" {
		t.Errorf("offline state json: %v", off)
	}
	must(t, 2, "invoke", id, "on", "--payload", "{bad")
	must(t, 2, "invoke", id, "state", "--timeout", "2s")

	d := connectDevice(t, id, false)
	answerMethods(t, d)

	var res iothub.MethodResult
	jsonOut(t, &res, 0, "invoke", id, "state")
	var st iothub.BoardState
	if res.Status != 200 || json.Unmarshal(res.Payload, &st) != nil || st.Outputs["relay1"].State != "on" {
		t.Errorf("invoke state -o json: %+v", res)
	}
	r = must(t, 12, "invoke", id, "pulse", "--payload", `{"target":"relay1","duration":"2s"}`)
	if !strings.Contains(r.stdout, "400") || !strings.Contains(r.stdout, `action "pulse" not allowed on relay1`) {
		t.Errorf("refused invoke: %s", r)
	}

	r = must(t, 0, "state", id)
	for _, want := range []string{id + " (connected)", "relay1", "on", "door", "closed", "on relay1", "complete", "2026-01-02 03:04:05"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("state output lacks %q:\n%s", want, r.stdout)
		}
	}
	var on struct {
		Online bool              `json:"online"`
		Board  iothub.BoardState `json:"board"`
	}
	r = jsonOut(t, &on, 0, "state", id)
	if !on.Online || on.Board.Outputs["relay1"].State != "on" || on.Board.Inputs["door"].State != "closed" {
		t.Errorf("state json: %s", r.stdout)
	}

	r = must(t, 7, "invoke", id, "hang", "--timeout", "5s")
	if !strings.Contains(r.stderr, "did not answer") {
		t.Errorf("timed-out invoke: %s", r)
	}
}

// TestTwinShowSet: `c2d twin set` merges desired properties and tags (dotted paths, JSON scalars,
// null deleting) and `c2d twin show` prints them; --etag makes the update conditional.
func TestTwinShowSet(t *testing.T) {
	t.Parallel()
	id := newDevice(t, "twin")
	must(t, 0, "twin", "set", id, "--desired", "outputs.relay1=on;outputs.act=off;rate=5", "--tags", "site=north")
	r := must(t, 0, "twin", "show", id)
	for _, want := range []string{`outputs.relay1 = "on"`, `outputs.act = "off"`, "rate = 5", `site = "north"`, "Desired ($version 2)", "Reported ($version 1)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("twin show lacks %q:\n%s", want, r.stdout)
		}
	}
	var tw struct {
		ETag       string `json:"etag"`
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	jsonOut(t, &tw, 0, "twin", "set", id, "--desired", "outputs.act=null")
	if out := tw.Properties.Desired["outputs"].(map[string]any); out["act"] != nil || out["relay1"] != "on" || tw.Properties.Desired["$metadata"] == nil {
		t.Errorf("after null: %+v", tw.Properties.Desired)
	}
	must(t, 0, "twin", "set", id, "--tags", "floor=2", "--etag", tw.ETag)
	r = must(t, 1, "twin", "set", id, "--tags", "floor=3", "--etag", tw.ETag)
	if !strings.Contains(r.stderr, "etag") {
		t.Errorf("stale etag: %s", r)
	}
	must(t, 2, "twin", "set", id)
	must(t, 2, "twin", "set", id, "--desired", "noequals")
	must(t, 9, "twin", "show", "nobody-here")
}
