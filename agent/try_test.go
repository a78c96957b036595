package agent_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/agent"
)

// try decodes a property set exactly as a message: the accepted plan, or the reason the operator
// would read; nothing moves without --hardware.
func TestTryDecodesLikeAMessage(t *testing.T) {
	_, _, addr := startMochi(t)
	b := newBoard(t, addr, "")
	for _, tc := range []struct {
		props, out string
		reject     bool
	}{
		{"target=relay1;action=pulse;duration=2s", "Accepted: pulse relay1 for 2s (complete on finish)\nNothing moved; add --hardware to perform it (stop the agent first).\n", false},
		{"target=act action=blink count=3 interval=100ms", "Accepted: blink act 3× (100ms on, 100ms off) (complete on finish)\nNothing moved; add --hardware to perform it (stop the agent first).\n", false},
		{"target=relay9;action=on", "Rejected: unknown target \"relay9\" (declared: act, relay1, buzzer)\n", true},
		{"target=relay1;action=pulse;duration=3h", "Rejected: duration 3h exceeds relay1's max_duration 2h\n", true},
	} {
		props, err := agent.ParseTryProperties(tc.props)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = agent.Try(context.Background(), &out, b.cfg, props, false, slog.New(slog.DiscardHandler))
		if tc.reject != errors.Is(err, agent.ErrWouldReject) || out.String() != tc.out {
			t.Errorf("try %q: err %v, output\n%s\nwant\n%s", tc.props, err, out.String(), tc.out)
		}
	}
	if _, err := os.Stat(b.stateFile); err == nil {
		t.Errorf("try without --hardware opened the board (%s exists)", b.stateFile)
	}
	if _, err := agent.ParseTryProperties("target"); err == nil || !strings.Contains(err.Error(), "want name=value") {
		t.Errorf("try 'target': %v", err)
	}
}

// While an agent runs, nothing else may drive its outputs or take over its session: a second
// agent, check-config --hardware/--connect and try --hardware refuse, naming the fix; after it
// stops they work, and try --hardware performs the action on the board.
func TestHardwareCommandsRefuseWhileAgentRuns(t *testing.T) {
	_, _, addr := startMochi(t)
	b := newBoard(t, addr, "")
	r := startAgent(t, b)
	props, _ := agent.ParseTryProperties("target=relay1;action=pulse;duration=60ms")
	var out bytes.Buffer
	for name, err := range map[string]error{
		"check-config --hardware": agent.CheckConfig(context.Background(), &out, b.configFile, agent.CheckOptions{Hardware: true}, slog.New(slog.DiscardHandler)),
		"check-config --connect":  agent.CheckConfig(context.Background(), &out, b.configFile, agent.CheckOptions{Connect: true}, slog.New(slog.DiscardHandler)),
		"try --hardware":          agent.Try(context.Background(), &out, b.cfg, props, true, slog.New(slog.DiscardHandler)),
		"a second agent":          agent.Run(context.Background(), b.cfg, agent.Options{Logger: slog.New(slog.DiscardHandler)}),
	} {
		if !errors.Is(err, agent.ErrAgentRunning) || !strings.Contains(err.Error(), "sudo systemctl stop c2d-agent") ||
			!strings.Contains(err.Error(), "as pid ") {
			t.Errorf("%s while the agent runs: %v", name, err)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := agent.Try(context.Background(), &out, b.cfg, props, true, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("try --hardware after the agent stopped: %v", err)
	}
	if !strings.HasPrefix(out.String(), "Running: pulse relay1 for 60ms\nDone in ") {
		t.Errorf("try --hardware printed %q", out.String())
	}
	log, err := os.ReadFile(b.logFile)
	if err != nil || strings.Count(string(log), `"relay1"`) < 2 {
		t.Errorf("try --hardware did not move relay1 on and off again: %v\n%s", err, log)
	}
	out.Reset()
	if err := agent.CheckConfig(context.Background(), &out, b.configFile, agent.CheckOptions{Connect: true}, slog.New(slog.DiscardHandler)); err != nil ||
		!strings.Contains(out.String(), "connection: tcp://"+addr+" accepted device ") {
		t.Errorf("check-config --connect: %v\n%s", err, out.String())
	}
}
