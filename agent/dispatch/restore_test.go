package dispatch

import (
	"testing"

	"github.com/c2d-project/c2d/agent/action"
)

// docs/agent.md: a pulse switches the output on for its duration, then "back to the previous
// state" — an output that was already on stays on, it is not switched off.
func TestPulseRestoresPreviousState(t *testing.T) {
	b, d := setup(t)
	if r := wait(t, submit(d, action.Step{Action: action.On, Target: "relay1"})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := wait(t, submit(d, action.Step{Action: action.Pulse, Target: "relay1", Duration: 20 * ms})); r.Err != nil {
		t.Fatal(r.Err)
	}
	h := after(b, "relay1")
	if !equal(states(h), []bool{true, true, true}) {
		t.Fatalf("relay1 went %v: a pulse of an output that was on must leave it on", h)
	}
	if !b.Output("relay1").State() {
		t.Fatal("relay1 is off after pulsing it from on")
	}
}
