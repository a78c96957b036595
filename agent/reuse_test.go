package agent_test

import (
	"testing"

	"github.com/c2d-project/c2d/hw/simhw"
)

// A message id reused with different content while the first message with that id still runs is
// a new message: it runs (it is not taken for a redelivery of the running one and settled with
// it), and the first finishes as it would have.
func TestReusedIDWithOtherContentWhileRunningRunsAsNew(t *testing.T) {
	addr := startMosquitto(t)
	b := newBoard(t, addr, "")
	svc := newService(t, addr)
	startAgent(t, b)

	svc.send(t, "m-reuse", "target", "relay1", "action", "pulse", "duration", "400ms")
	waitState(t, b.stateFile, "relay1 on (the pulse runs)", func(s simhw.State) bool { return s.Outputs["relay1"].On })
	svc.send(t, "m-reuse", "target", "act", "action", "on")
	waitState(t, b.stateFile, "act on: the reused id ran as a new message", func(s simhw.State) bool { return s.Outputs["act"].On })
	waitState(t, b.stateFile, "relay1 off: the first message's pulse ended", func(s simhw.State) bool {
		return !s.Outputs["relay1"].On && s.Outputs["relay1"].Changes >= 2
	})
	if got := ons(transitions(t, b.logFile, "relay1")); got != "on,off" {
		t.Errorf("relay1 went %s, want one pulse", got)
	}
	if got := ons(transitions(t, b.logFile, "act")); got != "on" {
		t.Errorf("act went %s, want on once", got)
	}
}
