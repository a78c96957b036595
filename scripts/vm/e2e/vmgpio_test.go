//go:build vmgpio

package e2e_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/c2d-project/c2d/internal/testproc"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/hw/hwtest"
	"github.com/c2d-project/c2d/scripts/vm/vmsim"
)

var binDir = flag.String("c2d.bin", "/tests/bin", "directory holding c2d-agent and c2d-hub")

// Timing bounds for what the kernel saw: timers do not fire early (a few ms allowed for the latency
// of the write that starts an interval); the VM runs under TCG on a shared host, so lateness gets
// a generous allowance.
const (
	early = 5 * time.Millisecond
	late  = 300 * time.Millisecond
	// uleds changes are stamped when the test's reader goroutine gets them, so one late read
	// makes the next interval look short: a first read 31 ms late under TCG on a loaded host was
	// seen (2026-12-07). 50 ms still catches a blink period more than 10 % short by the sixth change.
	ledEarly = 50 * time.Millisecond
)

var (
	rp1   *vmsim.Chip
	act   *vmsim.LED
	trace *vmsim.Trace
)

// The board: a Pi 5 (pinctrl-rp1 naming GPIO0..27) with its ACT LED. Created before any agent
// starts, since periph enumerates chips and LEDs once, when the agent opens its hardware.
func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	names := make([]string, 0, 54)
	for _, p := range hwtest.Pi5Chip().Pins {
		names = append(names, p.N)
	}
	if rp1, err = vmsim.NewChip("e2e-rp1", "pinctrl-rp1", names); err == nil {
		if act, err = vmsim.NewLED("ACT", 1); err == nil {
			trace, err = vmsim.StartTrace()
		}
	}
	code := 2
	if err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
	} else {
		code = m.Run()
	}
	if trace != nil {
		_ = trace.Stop()
	}
	if act != nil {
		_ = act.Close()
	}
	if err := rp1.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
		code = 1
	}
	os.Exit(code)
}

// --- processes -----------------------------------------------------------------------------

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testproc.SyncBuffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return startAs(t, nil, name, env, args...)
}

// startAs runs the program with cred's uid, gid and groups (nil: as the test, root).
func startAs(t *testing.T, cred *syscall.Credential, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &testproc.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(*binDir, name), args...)
	p.cmd.Env = append(os.Environ(), env...)
	if cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// wait returns the exit code once the process ends.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v\n%s", p.name, timeout, p.out.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

type hub struct {
	data string
	ep   server.Endpoints
	api  *apiclient.Client
	// settled: every message sent with send, and the outcome the hub reported for it.
	settled map[string]iothub.FeedbackStatus
}

func startHub(t *testing.T) *hub {
	t.Helper()
	h := &hub{data: filepath.Join(t.TempDir(), "hub"), settled: map[string]iothub.FeedbackStatus{}}
	p := start(t, "c2d-hub", nil, "serve", "--data", h.data, "--hostname", "hub.local",
		"--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0", "--mqtts", "off", "--https", "off", "--ws", "off", "--wss", "off", "--amqps", "off")
	waitFor(t, 30*time.Second, "c2d-hub's endpoints.json", func() bool {
		select {
		case <-p.done:
			t.Fatalf("c2d-hub exited: %v\n%s", p.err, p.out.String())
		default:
		}
		ep, err := server.ReadEndpoints(h.data)
		h.ep = ep
		return err == nil && ep.PID == p.cmd.Process.Pid && ep.MQTT != "" && ep.HTTP != ""
	})
	out, err := exec.Command(filepath.Join(*binDir, "c2d-hub"), "connection-string", "--data", h.data, "--policy", "iothubowner").CombinedOutput()
	if err != nil {
		t.Fatalf("c2d-hub connection-string: %v\n%s", err, out)
	}
	cs, err := iothub.ParseServiceConnectionString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("connection-string printed %q: %v", out, err)
	}
	if h.api, err = apiclient.New(cs, apiclient.Options{Endpoint: "http://" + h.ep.HTTP}); err != nil {
		t.Fatal(err)
	}
	return h
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// send enqueues a message with the given properties and waits until the hub has its outcome.
func (h *hub) send(t *testing.T, device string, props ...string) iothub.MessageStatus {
	t.Helper()
	var ps []iothub.AppProperty
	for i := 0; i+1 < len(props); i += 2 {
		ps = append(ps, iothub.AppProperty{Name: props[i], Value: props[i+1]})
	}
	ctx := ctxT(t, 60*time.Second)
	res, err := h.api.Send(ctx, device, iothub.SendRequest{Ack: iothub.AckFull, Properties: ps})
	if err != nil {
		t.Fatalf("send %v: %v", props, err)
	}
	st, err := h.api.MessageStatus(ctx, device, res.MessageID, 45*time.Second)
	if err != nil {
		t.Fatalf("status of %s: %v", res.MessageID, err)
	}
	if st.Outcome == "" {
		t.Fatalf("message %v not settled within 45s: state %s", props, st.State)
	}
	h.settled[st.MessageID] = st.Outcome
	return st
}

func (h *hub) sendOK(t *testing.T, device string, props ...string) {
	t.Helper()
	if st := h.send(t, device, props...); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("message %v: outcome %s (%s), want Success", props, st.Outcome, st.Reason)
	}
}

const agentConfig = `connection:
  connection_string: "%s"
  broker_url: tcp://%s
  reconnect_min: 100ms
  reconnect_max: 1s
hardware:
  backend: periph
state_dir: %s
outputs:
  act:
    led: ACT
    safe: off
    actions: [on, off, toggle, blink]
    min_interval: 50ms
  relay1:
    pin: GPIO17
    active_low: true
    safe: off
    actions: [on, off, toggle, pulse]
    min_interval: 50ms
  lamp:
    chip: pinctrl-rp1
    line: 27
    safe: on
    actions: [on, off, toggle, blink, pulse]
    min_interval: 50ms
%scommands:
  identify:
    steps:
      - {target: act, action: blink, count: 2, interval: 100ms}
      - {target: relay1, action: pulse, duration: 200ms}
`

// writeConfig writes an agent config for device on the broker at addr, with extra YAML appended
// to outputs.
func writeConfig(t *testing.T, addr, device, key, extra string) string {
	t.Helper()
	dir := t.TempDir()
	cs := fmt.Sprintf("HostName=hub.local;DeviceId=%s;SharedAccessKey=%s", device, key)
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(agentConfig, cs, addr, filepath.Join(dir, "state"), extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// --- kernel side ---------------------------------------------------------------------------

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func levels(t *testing.T, off int) []vmsim.GPIOEvent {
	t.Helper()
	evs, err := trace.Events(rp1.Base, rp1.Lines)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Op == "get" || e.Op == "in" {
			t.Errorf("gpio %d was read back or made an input: %v", e.GPIO, e)
		}
	}
	return vmsim.Levels(evs, rp1.Base+off)
}

func levelString(evs []vmsim.GPIOEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprint(&b, e.Value)
	}
	return b.String()
}

// moved lists the offsets with any value driven since the last trace reset.
func moved(t *testing.T) map[int]bool {
	t.Helper()
	evs, err := trace.Events(rp1.Base, rp1.Lines)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]bool{}
	for _, e := range evs {
		m[e.GPIO-rp1.Base] = true
	}
	return m
}

func wantValue(t *testing.T, off, want int) {
	t.Helper()
	if err := rp1.WaitValue(off, want, 2*time.Second); err != nil {
		t.Errorf("pinctrl-rp1 line %d: %v", off, err)
	}
}

func within(t *testing.T, what string, got, want time.Duration) {
	t.Helper()
	withinBounds(t, what, got, want, early)
}

func withinBounds(t *testing.T, what string, got, want, early time.Duration) {
	t.Helper()
	if got < want-early || got > want+late {
		t.Errorf("%s: %v, want %v (bounds -%v/+%v)", what, got, want, early, late)
	} else {
		t.Logf("%s: %v (want %v)", what, got, want)
	}
}

func ledEvents(t *testing.T, n int) []vmsim.LEDEvent {
	t.Helper()
	var evs []vmsim.LEDEvent
	for len(evs) < n {
		ev, err := act.Next(5 * time.Second)
		if err != nil {
			t.Fatalf("ACT: after %v: %v", evs, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitLED reads ACT's changes until one is to want.
func waitLED(t *testing.T, want int32) {
	t.Helper()
	var seen []int32
	for {
		ev, err := act.Next(5 * time.Second)
		if err != nil {
			t.Fatalf("ACT never went to %d (changes seen: %v): %v", want, seen, err)
		}
		if seen = append(seen, ev.Brightness); ev.Brightness == want {
			return
		}
	}
}

func ledString(evs []vmsim.LEDEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprint(&b, e.Brightness)
	}
	return b.String()
}

const (
	relayOff = 17 // GPIO17, active-low: 1 = off
	lampOff  = 27 // pinctrl-rp1 line 27, active-high, safe on
)

// --- tests ---------------------------------------------------------------------------------

// The whole path: operator → hub API → MQTT → agent → periph → kernel, and back to feedback.
func TestVMAgentOverHubDrivesKernelLines(t *testing.T) {
	h := startHub(t)
	dev, err := h.api.CreateDevice(ctxT(t, 10*time.Second), "pi-5", "", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, h.ep.MQTT, dev.DeviceID, dev.Authentication.SymmetricKey.PrimaryKey, "")
	// Undriven lines read their pull: the opposite of each safe level, so a missed drive shows.
	if err := rp1.SetPull(relayOff, false); err != nil {
		t.Fatal(err)
	}
	if err := rp1.SetPull(lampOff, false); err != nil {
		t.Fatal(err)
	}
	if err := trace.Reset(); err != nil {
		t.Fatal(err)
	}
	sock, notes := testproc.NotifySocket(t)
	agent := start(t, "c2d-agent", []string{"NOTIFY_SOCKET=" + sock}, "--config", cfg)
	waitReady := time.After(60 * time.Second)
ready:
	for {
		select {
		case n, ok := <-notes:
			if !ok {
				t.Fatal("notify socket closed")
			}
			if strings.Contains(n, "READY=1") {
				break ready
			}
		case <-agent.done:
			t.Fatalf("c2d-agent exited before READY: %v\n%s", agent.err, agent.out.String())
		case <-waitReady:
			t.Fatalf("c2d-agent not READY within 60s\n%s", agent.out.String())
		}
	}

	t.Run("safe state at start-up", func(t *testing.T) {
		wantValue(t, relayOff, 1) // active-low off
		wantValue(t, lampOff, 1)  // safe on
		if got := levelString(levels(t, relayOff)); got != "1" && got != "01" {
			t.Errorf("relay1 levels at start-up %q, want \"1\" (or the documented \"01\" request glitch)", got)
		}
		if b, err := act.Brightness(); err != nil || b != 0 {
			t.Errorf("ACT brightness %d (%v), want 0", b, err)
		}
		for off := range moved(t) {
			if off != relayOff && off != lampOff {
				t.Errorf("line %d moved at start-up; only 17 and 27 are configured", off)
			}
		}
	})

	t.Run("on off toggle", func(t *testing.T) {
		if err := trace.Reset(); err != nil {
			t.Fatal(err)
		}
		h.sendOK(t, dev.DeviceID, "target", "relay1", "action", "on")
		wantValue(t, relayOff, 0)
		h.sendOK(t, dev.DeviceID, "target", "relay1", "action", "off")
		wantValue(t, relayOff, 1)
		h.sendOK(t, dev.DeviceID, "target", "lamp", "action", "toggle")
		wantValue(t, lampOff, 0)
		h.sendOK(t, dev.DeviceID, "target", "lamp", "action", "toggle")
		wantValue(t, lampOff, 1)
		if got := levelString(levels(t, relayOff)); got != "01" {
			t.Errorf("relay1 levels %q, want \"01\"", got)
		}
		if got := levelString(levels(t, lampOff)); got != "01" {
			t.Errorf("lamp levels %q, want \"01\"", got)
		}
		h.sendOK(t, dev.DeviceID, "target", "act", "action", "on")
		h.sendOK(t, dev.DeviceID, "target", "act", "action", "toggle")
		if got := ledString(ledEvents(t, 2)); got != "10" {
			t.Errorf("ACT brightness %q, want \"10\"", got)
		}
	})

	t.Run("blink", func(t *testing.T) {
		const period = 100 * time.Millisecond
		h.sendOK(t, dev.DeviceID, "target", "act", "action", "blink", "count", "3", "interval", "100ms")
		evs := ledEvents(t, 6)
		if got := ledString(evs); got != "101010" {
			t.Fatalf("ACT brightness during blink %q, want \"101010\"", got)
		}
		// The agent's deadlines are absolute (start + i·period): check each change against its
		// own, measured from the first.
		for i := 1; i < len(evs); i++ {
			withinBounds(t, fmt.Sprintf("ACT transition %d (from the first)", i+1), evs[i].At.Sub(evs[0].At), time.Duration(i)*period, ledEarly)
		}
		if err := trace.Reset(); err != nil {
			t.Fatal(err)
		}
		h.sendOK(t, dev.DeviceID, "target", "lamp", "action", "blink", "count", "2", "on", "80ms", "off", "120ms")
		lv := levels(t, lampOff)
		// lamp was on: two on/off cycles, then back to on.
		if got := levelString(lv); got != "10101" {
			t.Fatalf("lamp levels during blink %q, want \"10101\" (2 cycles, then back on)", got)
		}
		for i, want := range []time.Duration{80 * time.Millisecond, 200 * time.Millisecond, 280 * time.Millisecond, 400 * time.Millisecond} {
			within(t, fmt.Sprintf("lamp blink transition %d (from the first)", i+2), lv[i+1].At-lv[0].At, want)
		}
	})

	t.Run("pulse", func(t *testing.T) {
		const d = 300 * time.Millisecond
		if err := trace.Reset(); err != nil {
			t.Fatal(err)
		}
		h.sendOK(t, dev.DeviceID, "target", "relay1", "action", "pulse", "duration", "300ms")
		lv := levels(t, relayOff)
		if got := levelString(lv); got != "01" {
			t.Fatalf("relay1 levels during pulse %q, want \"01\" (on = low, then off)", got)
		}
		within(t, "relay1 pulse", lv[1].At-lv[0].At, d)
	})

	t.Run("named command", func(t *testing.T) {
		if err := trace.Reset(); err != nil {
			t.Fatal(err)
		}
		h.sendOK(t, dev.DeviceID, "command", "identify")
		evs := ledEvents(t, 4)
		if got := ledString(evs); got != "1010" {
			t.Errorf("ACT during identify %q, want \"1010\"", got)
		}
		lv := levels(t, relayOff)
		if got := levelString(lv); got != "01" {
			t.Fatalf("relay1 during identify %q, want \"01\"", got)
		}
		within(t, "identify's relay1 pulse", lv[1].At-lv[0].At, 200*time.Millisecond)
	})

	t.Run("undeclared target is rejected and nothing moves", func(t *testing.T) {
		if err := trace.Reset(); err != nil {
			t.Fatal(err)
		}
		st := h.send(t, dev.DeviceID, "target", "GPIO18", "action", "on")
		if st.Outcome != iothub.StatusRejected || !strings.Contains(st.Reason, "GPIO18") {
			t.Errorf("outcome %s (%q), want Rejected naming GPIO18", st.Outcome, st.Reason)
		}
		if m := moved(t); len(m) != 0 {
			t.Errorf("lines moved for a rejected message: %v", m)
		}
		ledQuietFor(t)
	})

	t.Run("feedback reaches the operator", func(t *testing.T) {
		// Every message above asked for full acknowledgement: the operator's feedback receiver
		// gets one record per message, with the outcome the status API reported.
		got := map[string]iothub.FeedbackRecord{}
		deadline := time.Now().Add(30 * time.Second)
		for len(got) < len(h.settled) && time.Now().Before(deadline) {
			ctx := ctxT(t, 20*time.Second)
			b, err := h.api.ReceiveFeedback(ctx, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if b == nil {
				continue
			}
			for _, r := range b.Records {
				got[r.OriginalMessageID] = r
			}
			if err := h.api.CompleteFeedback(ctx, b.LockToken); err != nil {
				t.Fatal(err)
			}
		}
		for id, want := range h.settled {
			r, ok := got[id]
			switch {
			case !ok:
				t.Errorf("no feedback record for message %s (outcome %s)", id, want)
			case r.StatusCode != want:
				t.Errorf("feedback for %s: %s, the status API said %s", id, r.StatusCode, want)
			case want == iothub.StatusRejected && !strings.Contains(r.Reason, "GPIO18"):
				t.Errorf("feedback for the rejected message: reason %q, want it to name GPIO18", r.Reason)
			}
		}
		t.Logf("%d feedback records for %d messages", len(got), len(h.settled))
	})

	t.Run("SIGTERM mid-blink leaves every output safe", func(t *testing.T) {
		h.sendOK(t, dev.DeviceID, "target", "relay1", "action", "on")
		h.sendOK(t, dev.DeviceID, "target", "lamp", "action", "off")
		wantValue(t, relayOff, 0)
		wantValue(t, lampOff, 0)
		if err := trace.Reset(); err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t, 10*time.Second)
		if _, err := h.api.Send(ctx, dev.DeviceID, iothub.SendRequest{Properties: []iothub.AppProperty{
			{Name: "target", Value: "act"}, {Name: "action", Value: "blink"}, {Name: "count", Value: "50"}, {Name: "interval", Value: "100ms"},
		}}); err != nil {
			t.Fatal(err)
		}
		ledEvents(t, 1) // the blink has started
		if err := agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := agent.wait(t, 20*time.Second); code != 0 {
			t.Errorf("c2d-agent exit code %d after SIGTERM, want 0\n%s", code, agent.out.String())
		}
		// The cut-short blink ends with ACT off: its last change is to 0, and it stays there.
		waitLED(t, 0)
		if b, err := act.Brightness(); err != nil || b != 0 {
			t.Errorf("ACT brightness %d (%v) after SIGTERM, want 0 (safe off)", b, err)
		}
		// The lines are released at exit (gpio-sim then shows their pull): the last level the
		// agent drove is in the trace.
		for _, c := range []struct {
			name string
			off  int
			want int
		}{{"relay1", relayOff, 1}, {"lamp", lampOff, 1}} {
			lv := levels(t, c.off)
			if len(lv) == 0 || lv[len(lv)-1].Value != c.want {
				t.Errorf("%s: levels after SIGTERM %q, want the last to be %d (safe)", c.name, levelString(lv), c.want)
			}
		}
	})
}

func ledQuietFor(t *testing.T) {
	t.Helper()
	if evs := act.Drain(); len(evs) > 0 {
		t.Errorf("ACT changed: %v", evs)
	}
}

// A config naming a pin the board does not have stops the agent at start-up, naming the field,
// before anything moves.
func TestVMAgentRefusesUnknownPin(t *testing.T) {
	// No hub: the agent must stop before it connects anywhere (nothing listens on port 1).
	cfg := writeConfig(t, "127.0.0.1:1", "pi-5", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", `  siren:
    pin: GPIO99
    safe: off
    actions: [on, off]
`)
	if err := trace.Reset(); err != nil {
		t.Fatal(err)
	}
	agent := start(t, "c2d-agent", nil, "--config", cfg)
	if code := agent.wait(t, 30*time.Second); code == 0 {
		t.Fatalf("c2d-agent with GPIO99 exited 0\n%s", agent.out.String())
	}
	out := agent.out.String()
	t.Logf("c2d-agent: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "siren.pin") || !strings.Contains(out, `"GPIO99"`) {
		t.Errorf("start-up error should name siren.pin and \"GPIO99\":\n%s", out)
	}
	if !strings.Contains(out, "outputs.siren.pin") {
		t.Errorf("start-up error should name the config path outputs.siren.pin:\n%s", out)
	}
	if m := moved(t); len(m) != 0 {
		t.Errorf("lines moved although the config was refused: %v", m)
	}
}

// The deployment's permission model: c2d-agent runs as its own user in group gpio (the systemd
// unit), Raspberry Pi OS gives /dev/gpiochip* to group gpio, and our udev rule
// (systemd/60-c2d-leds.rules, copied into the VM) gives the LEDs to it. Without them the agent
// must stop at start-up saying what is missing.
func TestVMAgentAsUnprivilegedUser(t *testing.T) {
	const uid, gpioGID = 1000, 997
	rules, err := os.ReadFile(filepath.Join(*binDir, "..", "60-c2d-leds.rules"))
	if err != nil {
		t.Fatalf("the LED udev rule is not in the VM: %v", err)
	}
	h := startHub(t)
	dev, err := h.api.CreateDevice(ctxT(t, 10*time.Second), "pi-5-user", "", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, h.ep.MQTT, dev.DeviceID, dev.Authentication.SymmetricKey.PrimaryKey, "")
	chownR(t, filepath.Dir(cfg), uid, uid)
	// t.TempDir's parent is root's 0700: let the agent's user through to its own directories.
	if err := os.Chmod(filepath.Dir(filepath.Dir(cfg)), 0o755); err != nil {
		t.Fatal(err)
	}
	user := &syscall.Credential{Uid: uid, Gid: uid}
	restore := func() {
		_ = os.Chown(rp1.Dev(), 0, 0)
		_ = os.Chmod(rp1.Dev(), 0o600)
	}
	t.Cleanup(restore)

	t.Run("no access to /dev/gpiochip*: start-up error says why", func(t *testing.T) {
		a := startAs(t, user, "c2d-agent", nil, "--config", cfg)
		if code := a.wait(t, 30*time.Second); code == 0 {
			t.Fatal("c2d-agent started without access to the GPIO chips")
		}
		out := a.out.String()
		t.Logf("c2d-agent: %s", strings.TrimSpace(out))
		if !strings.Contains(out, "permission denied") || !strings.Contains(out, "gpio group") {
			t.Errorf("want an error naming the permission problem and the gpio group:\n%s", out)
		}
	})

	// What Raspberry Pi OS's udev rules do for the GPIO chips.
	if err := os.Chown(rp1.Dev(), 0, gpioGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(rp1.Dev(), 0o660); err != nil {
		t.Fatal(err)
	}
	user.Groups = []uint32{gpioGID}

	t.Run("GPIO allowed, LED not: start-up error names the LED", func(t *testing.T) {
		a := startAs(t, user, "c2d-agent", nil, "--config", cfg)
		if code := a.wait(t, 30*time.Second); code == 0 {
			t.Fatal("c2d-agent started without write access to the ACT LED")
		}
		out := a.out.String()
		t.Logf("c2d-agent: %s", strings.TrimSpace(out))
		if !strings.Contains(out, "act") || !strings.Contains(out, "permission denied") {
			t.Errorf("want an error naming output act and the permission problem:\n%s", out)
		}
	})

	t.Run("with the gpio group and our udev rule: runs and drives", func(t *testing.T) {
		applyLEDRule(t, string(rules), "ACT")
		if evs := act.Drain(); len(evs) > 0 {
			t.Fatalf("ACT changed before this agent started: %v", evs)
		}
		sock, notes := testproc.NotifySocket(t)
		// The socket, its t.TempDir and that one's root-only parent: open to the agent's user.
		for _, p := range []string{sock, filepath.Dir(sock), filepath.Dir(filepath.Dir(sock))} {
			if err := os.Chmod(p, 0o777); err != nil {
				t.Fatal(err)
			}
		}
		a := startAs(t, user, "c2d-agent", []string{"NOTIFY_SOCKET=" + sock}, "--config", cfg)
		waitReadyNote(t, a, notes)
		h.sendOK(t, dev.DeviceID, "target", "relay1", "action", "on")
		wantValue(t, relayOff, 0)
		h.sendOK(t, dev.DeviceID, "target", "act", "action", "on")
		if got := ledString(ledEvents(t, 1)); got != "1" {
			t.Errorf("ACT %q, want \"1\"", got)
		}
		if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := a.wait(t, 20*time.Second); code != 0 {
			t.Errorf("exit code %d after SIGTERM\n%s", code, a.out.String())
		}
		if got := ledString(ledEvents(t, 1)); got != "0" {
			t.Errorf("ACT %q after SIGTERM, want \"0\" (safe)", got)
		}
	})
}

func chownR(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// applyLEDRule runs what the udev rule's RUN+= commands do for the LED's "add" event, with %p
// (the device path) of /sys/class/leds/<name>.
func applyLEDRule(t *testing.T, rules, name string) {
	t.Helper()
	real, err := filepath.EvalSymlinks("/sys/class/leds/" + name)
	if err != nil {
		t.Fatal(err)
	}
	devpath := strings.TrimPrefix(real, "/sys")
	ran := 0
	for _, line := range strings.Split(rules, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") || !strings.Contains(line, `SUBSYSTEM=="leds"`) {
			continue
		}
		for _, part := range strings.Split(line, "RUN+=")[1:] {
			cmd := strings.Trim(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(part), ",")), `"`)
			cmd = strings.ReplaceAll(cmd, "%p", devpath)
			cmd = strings.ReplaceAll(cmd, "gpio ", "997 ") // no /etc/group in the VM
			if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
				t.Fatalf("rule command %q: %v\n%s", cmd, err, out)
			}
			ran++
		}
	}
	if ran == 0 {
		t.Fatalf("no RUN+= command for SUBSYSTEM==\"leds\" in the rule:\n%s", rules)
	}
}

func waitReadyNote(t *testing.T, a *proc, notes <-chan string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case n, ok := <-notes:
			if !ok {
				t.Fatal("notify socket closed")
			}
			if strings.Contains(n, "READY=1") {
				return
			}
		case <-a.done:
			t.Fatalf("c2d-agent exited before READY: %v\n%s", a.err, a.out.String())
		case <-timeout:
			t.Fatalf("c2d-agent not READY within 30s\n%s", a.out.String())
		}
	}
}
