package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/agent"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/agent/ledger"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw/simhw"
	"github.com/c2d-project/c2d/internal/sdnotify"
	"github.com/c2d-project/c2d/internal/testproc"
)

const (
	deviceID = "pi-1"
	connStr  = "HostName=hub.local;DeviceId=" + deviceID + ";SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
)

// startMosquitto runs a real Mosquitto on a free loopback port, acting as a plain (Azure-like)
// hub: it keeps persistent sessions and QoS 1 messages for offline clients, and knows nothing of
// c2d's disposition extension. It returns the broker address.
func startMosquitto(t *testing.T) string {
	t.Helper()
	return startMosquittoOn(t, freePort(t))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startMosquittoOn(t *testing.T, port int) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, err2 := os.Stat(p); err2 == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install mosquitto): skipping the real-broker integration test")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 20\nlog_dest stderr\nlog_type error\nlog_type warning\n", port)), 0o644))
	cmd := exec.Command(bin, "-c", conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case err := <-exited:
			t.Fatalf("mosquitto exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the port until the broker listens
	}
}

// board is one test board: a derived config (sim backend, temp paths, the broker under test).
type board struct {
	dir, stateFile, logFile, configFile string
	inputsFile                          string // the simulated inputs (hardware.sim.inputs_file)
	cfg                                 *config.Config
}

func newBoard(t *testing.T, brokerAddr string, extra string) *board {
	t.Helper()
	dir := t.TempDir()
	b := &board{dir: dir, stateFile: filepath.Join(dir, "outputs.json"), logFile: filepath.Join(dir, "transitions.jsonl"), configFile: filepath.Join(dir, "agent.yaml"), inputsFile: filepath.Join(dir, "inputs.json")}
	must(t, os.WriteFile(filepath.Join(dir, "device.conn"), []byte(connStr+"\n"), 0o600))
	yaml := fmt.Sprintf(`connection:
  connection_string_file: %s
  broker_url: tcp://%s
  reconnect_min: 50ms
  reconnect_max: 500ms
  dispositions: azure
hardware:
  backend: sim
  sim:
    state_file: %s
    transition_log: %s
    inputs_file: %s
state_dir: %s
ready_timeout: 20s
outputs:
  act:
    led: ACT
    actions: [on, off, toggle, blink]
    max_duration: 10s
  relay1:
    pin: GPIO17
    active_low: true
    actions: [on, off, pulse]
    max_duration: 2h
    min_interval: 50ms
  buzzer:
    chip: pinctrl-bcm2711
    line: 27
    actions: [pulse, blink]
    complete_on: start
    max_duration: 5s
commands:
  identify:
    steps:
      - {target: act, action: blink, count: 3, interval: 20ms}
      - {target: buzzer, action: pulse, duration: 30ms}
%s`, filepath.Join(dir, "device.conn"), brokerAddr, b.stateFile, b.logFile, b.inputsFile, filepath.Join(dir, "state"), extra)
	must(t, os.WriteFile(b.configFile, []byte(yaml), 0o644))
	cfg, err := config.Load(b.configFile)
	if err != nil {
		t.Fatal(err)
	}
	b.cfg = cfg
	return b
}

func waitReady(t *testing.T, msgs <-chan string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("notify socket closed")
			}
			if strings.Contains(m, "READY=1") {
				return m
			}
		case <-timeout:
			t.Fatal("agent never reported READY=1")
		}
	}
}

// running is an agent.Run in this process.
type running struct {
	stop func() error
	logs *syncBuffer
}

func startAgent(t *testing.T, b *board) *running {
	t.Helper()
	sock, msgs := testproc.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, b.cfg, agent.Options{
			Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Notifier: sdnotify.FromEnv(),
		})
	}()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = errors.New("agent.Run did not return after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		_ = stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	select {
	case err := <-done:
		t.Fatalf("agent.Run returned at start-up: %v\n%s", err, logs.String())
	default:
	}
	ready := waitReady(t, msgs)
	if !strings.Contains(ready, "STATUS=connected to tcp://") {
		t.Errorf("READY status %q does not say connected", ready)
	}
	return &running{stop: stop, logs: logs}
}

// syncBuffer is the shared harness's; the package's other test files use this name.
type syncBuffer = testproc.SyncBuffer

// service is the test's cloud side: it publishes device-bound messages the way a hub delivers them
// and listens to the device's D2C events (where reject reports arrive on a plain hub).
type service struct {
	c      paho.Client
	events chan iothub.RejectReport
}

func newService(t *testing.T, addr string) *service {
	t.Helper()
	s := &service{events: make(chan iothub.RejectReport, 64)}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("svc-%d", time.Now().UnixNano())).SetCleanSession(true)
	s.c = paho.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("service connect: %v", tok.Error())
	}
	tok := s.c.Subscribe(iothub.EventsFilter(deviceID), 1, func(_ paho.Client, m paho.Message) {
		_, bag, err := iothub.ParseEventsTopic(m.Topic())
		if err != nil {
			t.Errorf("bad events topic %q: %v", m.Topic(), err)
			return
		}
		if v, _ := bag.Get("c2d-report"); v != "reject" {
			return
		}
		var r iothub.RejectReport
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("reject report %q: %v", m.Payload(), err)
			return
		}
		if mid, _ := bag.Get("c2d-original-mid"); mid != r.OriginalMessageID {
			t.Errorf("report bag mid %q, body %q", mid, r.OriginalMessageID)
		}
		s.events <- r
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("service subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

// send publishes a C2D message with QoS 1, as the hub would deliver it.
func (s *service) send(t *testing.T, mid string, props ...string) {
	t.Helper()
	m := &iothub.Message{MessageID: mid}
	for i := 0; i+1 < len(props); i += 2 {
		m.Properties = append(m.Properties, iothub.AppProperty{Name: props[i], Value: props[i+1]})
	}
	tok := s.c.Publish(iothub.DeviceBoundTopic(deviceID, m), 1, false, []byte{})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", mid, tok.Error())
	}
}

func (s *service) report(t *testing.T) iothub.RejectReport {
	t.Helper()
	select {
	case r := <-s.events:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no reject report on the events topic")
		return iothub.RejectReport{}
	}
}

// waitState polls the simulated board's state file until cond holds.
func waitState(t *testing.T, path string, what string, cond func(simhw.State) bool) simhw.State {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := simhw.ReadState(path)
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("state file never showed %s; last: %+v (err %v)", what, st, err)
		}
		time.Sleep(10 * time.Millisecond) // polling a file another process writes
	}
}

// transitions reads the set transitions of output from the log at path. simhw appends a
// transition's log line just after it replaced the state file, so a test that saw a state first
// waits for the log to reach the state file's seq (outputs.json beside the log, as newBoard puts it).
func transitions(t *testing.T, path string, output string) []simhw.Transition {
	t.Helper()
	var want uint64
	if st, err := simhw.ReadState(filepath.Join(filepath.Dir(path), "outputs.json")); err == nil {
		want = st.Seq
	}
	deadline := time.Now().Add(5 * time.Second)
	var all []simhw.Transition
	for {
		var err error
		all, err = simhw.ReadTransitions(path)
		if err != nil {
			t.Fatal(err)
		}
		if (len(all) > 0 && all[len(all)-1].Seq >= want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling a file another goroutine appends to
	}
	var out []simhw.Transition
	for _, tr := range all {
		if tr.Output == output && tr.Cause == simhw.CauseSet {
			out = append(out, tr)
		}
	}
	return out
}

func ons(trs []simhw.Transition) string {
	var s []string
	for _, tr := range trs {
		s = append(s, map[bool]string{true: "on", false: "off"}[tr.On])
	}
	return strings.Join(s, ",")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func changes(name string, n uint64) func(simhw.State) bool {
	return func(s simhw.State) bool { return s.Outputs[name].Changes >= n }
}

func TestAgentAgainstMosquitto(t *testing.T) {
	addr := startMosquitto(t)
	b := newBoard(t, addr, "")
	svc := newService(t, addr)
	a := startAgent(t, b)

	// Actions reach the simulated outputs. (The sim backend logs changes only: setting the current
	// state again is not a transition.)
	svc.send(t, "m-pulse", "target", "relay1", "action", "pulse", "duration", "60ms")
	svc.send(t, "m-on", "target", "relay1", "action", "on")
	st := waitState(t, b.stateFile, "relay1 pulsed, then on", func(s simhw.State) bool { return s.Outputs["relay1"].On && s.Outputs["relay1"].Changes >= 3 })
	if st.Outputs["relay1"].Level != "low" {
		t.Errorf("relay1 on with level %s; it is active-low", st.Outputs["relay1"].Level)
	}
	if got := transitions(t, b.logFile, "relay1"); ons(got) != "on,off,on" {
		t.Errorf("relay1 went %s", ons(got))
	} else if held := got[1].Time.Sub(got[0].Time); held < 55*time.Millisecond || held > 2*time.Second {
		t.Errorf("pulse held relay1 on for %v, want 60ms", held)
	}
	svc.send(t, "m-toggle", "target", "act", "action", "toggle")
	svc.send(t, "m-blink", "target", "act", "action", "blink", "count", "2", "interval", "20ms")
	svc.send(t, "m-cmd", "command", "identify")
	waitState(t, b.stateFile, "buzzer pulsed by identify", changes("buzzer", 2))
	waitState(t, b.stateFile, "act: toggle, 2 blinks and 3 blinks done", changes("act", 11))
	if got := ons(transitions(t, b.logFile, "act")); got != "on,off,on,off,on,off,on,off,on,off,on" {
		t.Errorf("act went %s", got)
	}

	// Refusals are reported as D2C events with the reason (plain hub: PUBACK completes them).
	svc.send(t, "m-bad", "target", "relay9", "action", "on")
	if r := svc.report(t); r.OriginalMessageID != "m-bad" || r.Reason != `unknown target "relay9" (declared: act, relay1, buzzer)` || r.Disposition != "reject" {
		t.Errorf("report %+v", r)
	}
	svc.send(t, "m-long", "target", "relay1", "action", "pulse", "duration", "3h")
	if r := svc.report(t); r.OriginalMessageID != "m-long" || r.Reason != `duration 3h exceeds relay1's max_duration 2h` {
		t.Errorf("report %+v", r)
	}

	// A redelivered message (same $.mid, same content) acts once and is answered again.
	svc.send(t, "m-off", "target", "relay1", "action", "off")
	waitState(t, b.stateFile, "relay1 off", func(s simhw.State) bool { return !s.Outputs["relay1"].On })
	svc.send(t, "m-off", "target", "relay1", "action", "off")
	svc.send(t, "m-bad", "target", "relay9", "action", "on") // a rejected one is re-reported, not re-decided
	if r := svc.report(t); r.OriginalMessageID != "m-bad" {
		t.Errorf("report %+v", r)
	}
	svc.send(t, "m-after", "target", "act", "action", "off")
	waitState(t, b.stateFile, "act off", func(s simhw.State) bool { return !s.Outputs["act"].On })
	if got := ons(transitions(t, b.logFile, "relay1")); got != "on,off,on,off" {
		t.Errorf("relay1 went %s: the redelivered m-off must not move it again", got)
	}
	if !strings.Contains(a.logs.String(), "redelivered after it was settled") {
		t.Error("agent did not log the redelivery")
	}

	// Messages sent while the agent is down are executed once after it starts (persistent session).
	must(t, a.stop())
	st = waitState(t, b.stateFile, "closed board", func(s simhw.State) bool { return s.Closed })
	for name, o := range st.Outputs {
		if o.On != o.Safe {
			t.Errorf("%s left %v after stop, safe is %v", name, o.On, o.Safe)
		}
	}
	svc.send(t, "m-offline", "target", "relay1", "action", "on")
	startAgent(t, b)
	waitState(t, b.stateFile, "relay1 on after restart", func(s simhw.State) bool { return s.Outputs["relay1"].On })
	svc.send(t, "m-marker", "target", "act", "action", "on")
	waitState(t, b.stateFile, "act on", func(s simhw.State) bool { return s.Outputs["act"].On })
	// 4 from the first run, then the safe drive at Close is cause "close", then exactly one on.
	if got := ons(transitions(t, b.logFile, "relay1")); got != "on,off,on,off,on" {
		t.Errorf("relay1 went %s: m-offline must run exactly once", got)
	}
}

// A crash after "started" was recorded and before "done": the redelivery is refused with a reason
// instead of being run a second time.
func TestInterruptedMessageIsNotRunTwice(t *testing.T) {
	addr := startMosquitto(t)
	b := newBoard(t, addr, "")
	svc := newService(t, addr)
	msg := &iothub.Message{MessageID: "m-crash", Properties: []iothub.AppProperty{{Name: "target", Value: "relay1"}, {Name: "action", Value: "pulse"}, {Name: "duration", Value: "1h"}}}
	led, err := ledger.Open(filepath.Join(b.dir, "state", ledger.FileName), ledger.Options{})
	must(t, err)
	started := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	must(t, led.Start("m-crash", agent.Fingerprint(msg), started))
	must(t, led.Close())

	startAgent(t, b)
	svc.send(t, "m-crash", "target", "relay1", "action", "pulse", "duration", "1h")
	r := svc.report(t)
	want := "interrupted: the agent stopped while running this message (started 2026-11-25T21:00:00Z); its outputs were returned to their safe state and it is not run twice"
	if r.OriginalMessageID != "m-crash" || r.Reason != want {
		t.Errorf("report %+v\nwant reason %s", r, want)
	}
	if got := ons(transitions(t, b.logFile, "relay1")); got != "" {
		t.Errorf("relay1 moved (%s)", got)
	}
}

// The real binary: SIGTERM during a long pulse puts the outputs in their safe state and exits 0;
// the cut-short message is rejected with a reason.
func TestBinarySIGTERM(t *testing.T) {
	addr := startMosquitto(t)
	b := newBoard(t, addr, "")
	svc := newService(t, addr)
	bin := buildAgent(t)

	sock, msgs := testproc.NotifySocket(t)
	cmd := exec.Command(bin, "--config", b.configFile)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("c2d-agent output:\n%s", out.String())
		}
	})
	waitReady(t, msgs)
	svc.send(t, "m-long", "target", "relay1", "action", "pulse", "duration", "1h")
	svc.send(t, "m-act", "target", "act", "action", "on")
	waitState(t, b.stateFile, "relay1 and act on", func(s simhw.State) bool { return s.Outputs["relay1"].On && s.Outputs["act"].On })

	must(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("c2d-agent exited with %v, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("c2d-agent did not exit after SIGTERM")
	}
	st, err := simhw.ReadState(b.stateFile)
	must(t, err)
	if !st.Closed || st.Outputs["relay1"].On || st.Outputs["act"].On || st.Outputs["relay1"].Level != "high" {
		t.Errorf("after SIGTERM: %+v", st)
	}
	r := svc.report(t)
	if r.OriginalMessageID != "m-long" || r.Reason != "cut short: the agent is stopping; relay1 returned to safe state" {
		t.Errorf("report %+v", r)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func buildAgent(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "c2d-agent-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath, buildErr = filepath.Join(dir, "c2d-agent"), testproc.Build(dir, nil, "./cmd/c2d-agent")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// A board that boots without its hub still becomes ready (after ready_timeout, saying it is still
// connecting), keeps retrying, and works once the hub appears.
func TestOfflineAtBoot(t *testing.T) {
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
			t.Skip("mosquitto not installed")
		}
	}
	port := freePort(t)
	b := newBoard(t, fmt.Sprintf("127.0.0.1:%d", port), "")
	b.cfg.ReadyTimeout.Duration = 200 * time.Millisecond
	sock, msgs := testproc.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, b.cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Notifier: sdnotify.FromEnv()})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	ready := waitReady(t, msgs)
	if !strings.Contains(ready, "STATUS=connecting to tcp://127.0.0.1:") || !strings.Contains(ready, "last error:") {
		t.Errorf("READY while offline said %q", ready)
	}
	st, err := simhw.ReadState(b.stateFile)
	if err != nil || st.Outputs["relay1"].On {
		t.Errorf("outputs not in safe state before the first connection: %+v %v", st, err)
	}

	addr := startMosquittoOn(t, port)
	svc := newService(t, addr)
	// The agent's first session starts when it connects; wait for that before sending.
	deadline := time.After(15 * time.Second)
	for connected := false; !connected; {
		select {
		case m := <-msgs:
			connected = strings.Contains(m, "STATUS=connected to")
		case <-deadline:
			t.Fatal("agent never connected once the broker appeared")
		}
	}
	svc.send(t, "m-late", "target", "relay1", "action", "on")
	waitState(t, b.stateFile, "relay1 on", func(s simhw.State) bool { return s.Outputs["relay1"].On })
}
