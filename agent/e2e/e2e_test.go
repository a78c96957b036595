package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw/simhw"
	"github.com/c2d-project/c2d/internal/testproc"
)

var hubBin, agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "c2d-agent-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hubBin, agentBin = filepath.Join(dir, "c2d-hub"), filepath.Join(dir, "c2d-agent")
	if err := testproc.Build(dir, nil, "../../cloud/cmd/c2d-hub", "../cmd/c2d-agent"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startHub runs c2d-hub with a short lock timeout and feedback interval; listen replaces the
// default device listener (MQTT over TLS only). The service API is HTTPS only.
func startHub(t *testing.T, listen ...string) *testproc.Hub {
	t.Helper()
	if len(listen) == 0 {
		listen = []string{"--mqtt", "off", "--mqtts", "127.0.0.1:0"}
	}
	return testproc.StartHub(t, hubBin, testproc.HubOptions{
		Config: "queue:\n  lock_timeout: 5s\nfeedback:\n  interval: 50ms\n",
		Args:   append([]string{"--log-level", "warn", "--hostname", "hub.test", "--http", "off", "--https", "127.0.0.1:0", "--amqps", "off"}, listen...),
		Ready:  20 * time.Second,
	})
}

type board struct {
	dir, config, state, log string
}

// newBoard creates the device on the hub and writes the board's files: connection string (0600),
// config (sim backend, the hub's TLS port and CA).
func newBoard(t *testing.T, h *testproc.Hub, id string) *board {
	t.Helper()
	return newBoardAt(t, h, id, "ssl://"+h.Endpoints.MQTTS)
}

func newBoardAt(t *testing.T, h *testproc.Hub, id, brokerURL string) *board {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	dev, err := h.Client.CreateDevice(ctx, id, "", "")
	must(t, err)
	dir := t.TempDir()
	b := &board{dir: dir, config: filepath.Join(dir, "agent.yaml"), state: filepath.Join(dir, "outputs.json"), log: filepath.Join(dir, "transitions.jsonl")}
	conn := iothub.DeviceConnectionString{HostName: h.Endpoints.HostName, DeviceID: id, SharedAccessKey: dev.Authentication.SymmetricKey.PrimaryKey}
	must(t, os.WriteFile(filepath.Join(dir, "connection-string"), []byte(conn.String()+"\n"), 0o600))
	must(t, os.WriteFile(b.config, []byte(fmt.Sprintf(`connection:
  connection_string_file: %s
  broker_url: %s
  ca_file: %s
  reconnect_min: 50ms
  reconnect_max: 500ms
hardware:
  backend: sim
  sim: {state_file: %s, transition_log: %s}
state_dir: %s
outputs:
  act: {led: ACT, actions: [on, off, toggle, blink], max_duration: 10s}
  relay1: {pin: GPIO17, active_low: true, actions: [on, off, pulse], max_duration: 2h, min_interval: 50ms}
commands:
  identify:
    steps:
      - {target: act, action: blink, count: 2, interval: 20ms}
      - {target: relay1, action: pulse, duration: 60ms}
`, filepath.Join(dir, "connection-string"), brokerURL, h.Endpoints.CA, b.state, b.log, filepath.Join(dir, "state"))), 0o644))
	return b
}

type agentProc struct {
	cmd    *exec.Cmd
	out    *testproc.SyncBuffer
	exited chan error
}

func startAgent(t *testing.T, b *board) *agentProc {
	t.Helper()
	sock, notes := testproc.NotifySocket(t)
	p := &agentProc{cmd: exec.Command(agentBin, "--config", b.config), out: &testproc.SyncBuffer{}, exited: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	must(t, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("c2d-agent output:\n%s", p.out.String())
		}
	})
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-notes:
			if !strings.Contains(s, "READY=1") {
				continue
			}
			if !strings.Contains(s, "STATUS=connected to ") {
				t.Fatalf("READY without a connection: %q", s)
			}
			return p
		case err := <-p.exited:
			t.Fatalf("c2d-agent exited: %v\n%s", err, p.out.String())
		case <-timeout:
			t.Fatalf("c2d-agent not ready\n%s", p.out.String())
		}
	}
}

func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("c2d-agent exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("c2d-agent did not exit after SIGTERM")
	}
}

func send(t *testing.T, h *testproc.Hub, dev, mid string, props ...string) {
	t.Helper()
	req := iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull}
	for i := 0; i+1 < len(props); i += 2 {
		req.Properties = append(req.Properties, iothub.AppProperty{Name: props[i], Value: props[i+1]})
	}
	if _, err := h.Client.Send(ctxT(t, 10*time.Second), dev, req); err != nil {
		t.Fatalf("send %s: %v", mid, err)
	}
}

// settled long-polls the hub for the message's terminal state.
func settled(t *testing.T, h *testproc.Hub, dev, mid string) iothub.MessageStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := h.Client.MessageStatus(ctxT(t, 15*time.Second), dev, mid, 10*time.Second)
		must(t, err)
		if st.Outcome != "" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not settled: %+v", mid, st)
		}
	}
}

func transitions(t *testing.T, b *board, output string) string {
	t.Helper()
	all, err := simhw.ReadTransitions(b.log)
	must(t, err)
	var s []string
	for _, tr := range all {
		if tr.Output == output && tr.Cause == simhw.CauseSet {
			s = append(s, map[bool]string{true: "on", false: "off"}[tr.On])
		}
	}
	return strings.Join(s, ",")
}

func TestAgentWithHub(t *testing.T) {
	h := startHub(t)
	b := newBoard(t, h, "pi-1")
	a := startAgent(t, b)

	send(t, h, "pi-1", "pulse", "target", "relay1", "action", "pulse", "duration", "100ms")
	if st := settled(t, h, "pi-1", "pulse"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
		t.Errorf("pulse: %+v", st)
	}
	if got := transitions(t, b, "relay1"); got != "on,off" {
		t.Errorf("relay1 went %s by the time the hub saw the completion", got)
	}
	send(t, h, "pi-1", "cmd", "command", "identify")
	send(t, h, "pi-1", "toggle", "target", "act", "action", "toggle")
	if st := settled(t, h, "pi-1", "toggle"); st.Outcome != iothub.StatusSuccess {
		t.Errorf("toggle: %+v", st)
	}
	if st := settled(t, h, "pi-1", "cmd"); st.Outcome != iothub.StatusSuccess {
		t.Errorf("command: %+v", st)
	}
	if got := transitions(t, b, "act"); got != "on,off,on,off,on" {
		t.Errorf("act went %s (identify's 2 blinks, then toggle)", got)
	}

	// Refusals: rejected (dead-lettered) with the agent's reason in the status and the feedback.
	send(t, h, "pi-1", "bad-target", "target", "relay9", "action", "on")
	send(t, h, "pi-1", "bad-action", "target", "relay1", "action", "blink")
	wantReasons := map[string]string{
		"bad-target": `unknown target "relay9" (declared: act, relay1)`,
		"bad-action": `action "blink" not allowed on relay1 (allowed: on, off, pulse)`,
	}
	for mid, reason := range wantReasons {
		st := settled(t, h, "pi-1", mid)
		if st.Outcome != iothub.StatusRejected || st.Reason != reason {
			t.Errorf("%s: outcome %s reason %q, want Rejected %q", mid, st.Outcome, st.Reason, reason)
		}
	}
	fb := map[string]iothub.FeedbackRecord{}
	ctx := ctxT(t, 20*time.Second)
	for len(fb) < 5 {
		batch, err := h.Client.ReceiveFeedback(ctx, 5*time.Second)
		must(t, err)
		if batch == nil {
			t.Fatalf("feedback so far %v: missing records", fb)
		}
		for _, r := range batch.Records {
			fb[r.OriginalMessageID] = r
		}
		must(t, h.Client.CompleteFeedback(ctx, batch.LockToken))
	}
	for mid, reason := range wantReasons {
		if r := fb[mid]; r.StatusCode != iothub.StatusRejected || r.Reason != reason {
			t.Errorf("feedback for %s: %+v", mid, r)
		}
	}
	if r := fb["pulse"]; r.StatusCode != iothub.StatusSuccess {
		t.Errorf("feedback for pulse: %+v", r)
	}

	// Sent while the agent is down: executed once after it starts.
	a.stop(t)
	st, err := simhw.ReadState(b.state)
	must(t, err)
	if !st.Closed || st.Outputs["relay1"].On || st.Outputs["act"].On {
		t.Errorf("outputs after SIGTERM: %+v", st.Outputs)
	}
	send(t, h, "pi-1", "offline", "target", "relay1", "action", "on")
	startAgent(t, b)
	if st := settled(t, h, "pi-1", "offline"); st.Outcome != iothub.StatusSuccess {
		t.Errorf("offline: %+v", st)
	}
	if got := transitions(t, b, "relay1"); got != "on,off,on,off,on" {
		t.Errorf("relay1 went %s: want pulse, identify's pulse, then one on", got)
	}
}

// The hub redelivers a message whose PUBACK never came (the agent was killed after acting): the
// executed-id log makes the redelivery a no-op that still completes.
func TestKilledAfterActingActsOnce(t *testing.T) {
	h := startHub(t)
	b := newBoard(t, h, "pi-2")
	a := startAgent(t, b)
	send(t, h, "pi-2", "long", "target", "relay1", "action", "pulse", "duration", "1h")
	deadline := time.Now().Add(10 * time.Second)
	// Wait for the transition log, not just the state file: the board writes the state file
	// first and the log line right after, and a kill in between would lose the line this test
	// counts.
	for transitions(t, b, "relay1") != "on" {
		if time.Now().After(deadline) {
			t.Fatal("relay1 never switched on")
		}
		time.Sleep(10 * time.Millisecond) // polling the board's files
	}
	must(t, a.cmd.Process.Kill()) // crash mid-pulse: "started" recorded, nothing settled
	<-a.exited
	startAgent(t, b) // start-up drives relay1 to safe state; the hub redelivers after the lock expires
	st := settled(t, h, "pi-2", "long")
	if st.Outcome != iothub.StatusRejected || !strings.HasPrefix(st.Reason, "interrupted: the agent stopped while running this message") {
		t.Errorf("redelivered interrupted message: %+v", st)
	}
	if got := transitions(t, b, "relay1"); got != "on" {
		t.Errorf("relay1 transitions by set: %s; it must not run twice", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// MQTT over WebSockets (Azure's port-443 transport): the agent's default path /$iothub/websocket
// is where the hub serves it.
func TestWebSockets(t *testing.T) {
	h := startHub(t, "--mqtt", "off", "--mqtts", "off", "--ws", "127.0.0.1:0")
	b := newBoardAt(t, h, "pi-ws", "ws://"+h.Endpoints.WS)
	startAgent(t, b)
	send(t, h, "pi-ws", "ws-1", "target", "relay1", "action", "on")
	if st := settled(t, h, "pi-ws", "ws-1"); st.Outcome != iothub.StatusSuccess {
		t.Errorf("over WebSockets: %+v", st)
	}
	if got := transitions(t, b, "relay1"); got != "on" {
		t.Errorf("relay1 went %q", got)
	}
}
