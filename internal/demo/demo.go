package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/c2d-project/c2d/hw/simhw"
)

// Options configure a run.
type Options struct {
	BinDir string    // where c2d-hub, c2d-agent and c2d are
	Out    io.Writer // the narration
	Keep   bool      // keep the temporary directory (its path is printed)
}

// Step is one command the demo sends, with the outcome it expects.
type Step struct {
	Why      string
	Props    string
	WantExit int // c2d send's exit code: 0 Success, 3 Rejected (docs/cli.md)
}

// Steps is the demo's script.
var Steps = []Step{
	{"switch the relay on", "target=relay1;action=on", 0},
	{"blink the ACT LED three times", "target=act;action=blink;count=3;interval=150ms", 0},
	{"chirp the buzzer for 300 ms", "target=buzzer;action=pulse;duration=300ms", 0},
	{"run the board's named command", "command=identify", 0},
	{"an invalid command: relay9 is not declared on this board", "target=relay9;action=on", 3},
	{"the relay does not allow blink", "target=relay1;action=blink;count=2", 3},
}

const device = "demo-pi"

// agentConfig is a board with the ACT LED, a relay and a buzzer, on simulated hardware.
const agentConfig = `connection:
  connection_string_file: %[1]s/agent/connection-string
  broker_url: tcp://%[2]s
  dispositions: auto
  reconnect_min: 200ms
  reconnect_max: 2s
hardware:
  backend: sim
  sim:
    state_file: %[1]s/agent/board.json
    transition_log: %[1]s/agent/transitions.jsonl
    inputs_file: %[1]s/agent/inputs.json
state_dir: %[1]s/agent/state
outputs:
  act:
    led: ACT
    safe: off
    actions: [on, off, toggle, blink]
    max_duration: 30s
    max_count: 50
  relay1:
    pin: GPIO17
    active_low: true
    safe: off
    actions: [on, off, pulse]
    max_duration: 30s
  buzzer:
    pin: GPIO27
    safe: off
    actions: [pulse, blink]
    max_duration: 5s
    max_count: 10
inputs:
  door:
    pin: GPIO22
    pull: up
    active_low: true
commands:
  identify:
    description: blink ACT and chirp so a technician can find this board
    steps:
      - {target: act, action: blink, count: 4, interval: 100ms}
      - {target: buzzer, action: pulse, duration: 150ms}
`

type run struct {
	opt   Options
	dir   string
	env   []string
	outMu sync.Mutex
}

func (r *run) say(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.opt.Out, format+"\n", args...)
}

// Run runs the demo; it returns an error naming the first step that did not behave as expected.
func Run(ctx context.Context, opt Options) (err error) {
	if opt.Out == nil {
		opt.Out = os.Stdout
	}
	for _, b := range []string{"c2d-hub", "c2d-agent", "c2d"} {
		if _, err := os.Stat(filepath.Join(opt.BinDir, b)); err != nil {
			return fmt.Errorf("demo needs %s: %w (run make build)", b, err)
		}
	}
	dir, err := os.MkdirTemp("", "c2d-demo-")
	if err != nil {
		return err
	}
	if opt.Keep {
		defer fmt.Fprintf(opt.Out, "\nkept %s (hub data, agent config, board state, logs)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r := &run{opt: opt, dir: dir}
	start := time.Now()
	defer func() {
		if err == nil {
			r.say("\ndemo finished in %.1fs", time.Since(start).Seconds())
		}
	}()
	return r.run(ctx)
}

func (r *run) run(ctx context.Context) error {
	r.say("== 1. start a hub (embedded MQTT broker, durable queues, HTTP API) in %s", r.dir)
	hubData := filepath.Join(r.dir, "hub")
	hub, err := r.start(ctx, "hub", "c2d-hub", "serve", "--data", hubData, "--hostname", "localhost",
		"--mqtt", "127.0.0.1:0", "--mqtts", "off", "--http", "127.0.0.1:0", "--https", "off", "--amqps", "off", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer hub.stop(r)
	ep, err := waitEndpoints(ctx, filepath.Join(hubData, "endpoints.json"), hub)
	if err != nil {
		return err
	}
	r.say("   hub: MQTT on %s, service API on http://%s", ep.MQTT, ep.HTTP)

	owner, err := r.output(ctx, "c2d-hub", "connection-string", "--data", hubData)
	if err != nil {
		return err
	}
	r.env = append(os.Environ(),
		"C2D_CONNECTION_STRING="+strings.TrimSpace(owner),
		"C2D_ENDPOINT=http://"+ep.HTTP)
	r.say("   $ export C2D_CONNECTION_STRING=\"$(c2d-hub connection-string --data %s)\"", hubData)
	r.say("   $ export C2D_ENDPOINT=http://%s", ep.HTTP)

	r.say("\n== 2. provision the board")
	if err := r.show(ctx, 0, "c2d", "device", "create", device); err != nil {
		return err
	}
	devConn, err := r.output(ctx, "c2d", "device", "connection-string", device)
	if err != nil {
		return err
	}
	r.say("   $ c2d device connection-string %s > agent/connection-string   (mode 0600)", device)
	agentDir := filepath.Join(r.dir, "agent")
	if err := os.MkdirAll(filepath.Join(agentDir, "state"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(agentDir, "connection-string"), []byte(devConn), 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(agentDir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(agentConfig, r.dir, ep.MQTT)), 0o644); err != nil {
		return err
	}

	r.say("\n== 3. start the agent on simulated hardware (outputs: act LED, relay1 on GPIO17, buzzer on GPIO27)")
	agent, err := r.start(ctx, "agent", "c2d-agent", "--config", cfgPath)
	if err != nil {
		return err
	}
	defer agent.stop(r)
	if err := r.waitConnected(ctx, agent); err != nil {
		return err
	}
	r.say("   agent connected")

	boardFile := filepath.Join(agentDir, "board.json")
	board, err := newBoardLog(r, filepath.Join(agentDir, "transitions.jsonl"))
	if err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); board.watch(watchCtx) }()

	r.say("\n== 4. send commands and wait for each one's outcome (c2d send --wait)")
	r.say("   board at start: %s", board.line())
	for i, s := range Steps {
		r.say("\n-- %s", s.Why)
		err := r.show(ctx, s.WantExit, "c2d", "send", device, "--props", s.Props, "--mid", fmt.Sprintf("demo-%d", i+1), "--wait", "20s")
		// The agent acknowledges only after the action finished, so every transition is logged now.
		board.poll()
		if err != nil {
			stopWatch()
			<-watched
			return err
		}
	}

	r.say("\n== 5. the same outcomes as delivery feedback records (what a service reads)")
	// Feedback arrives in batches (at most a second apart here): drain until every record came.
	for seen, try := 0, 0; seen < len(Steps); try++ {
		out, err := r.showOutput(ctx, 0, "c2d", "feedback", "--wait", "5s")
		if err != nil {
			stopWatch()
			<-watched
			return err
		}
		seen += len(feedbackRow.FindAllString(out, -1))
		if try == 3 {
			stopWatch()
			<-watched
			return fmt.Errorf("%d feedback records received, want %d", seen, len(Steps))
		}
	}
	if err := r.show(ctx, 0, "c2d", "queue", "show", device); err != nil {
		stopWatch()
		<-watched
		return err
	}

	r.say("\n== 6. ask the board itself (direct methods: answered while you wait, never queued) and read its twin")
	r.say("   (the door contact on GPIO22 closes: $ echo '{\"door\": \"on\"}' > %s)", filepath.Join(r.dir, "agent", "inputs.json"))
	if err := simhw.WriteInputs(filepath.Join(r.dir, "agent", "inputs.json"), map[string]bool{"door": true}); err != nil {
		stopWatch()
		<-watched
		return fmt.Errorf("close the simulated door: %w", err)
	}
	for _, args := range [][]string{
		{"state", device},
		{"twin", "show", device},
		{"invoke", device, "blink", "--payload", `{"target":"act","count":2,"interval":"100ms"}`},
	} {
		if args[0] == "twin" {
			// The state method reads the board now; its reported properties follow within a
			// second (the agent coalesces them into at most one update a second), so the twin
			// is shown once it has caught up, as a technician would see it a moment later.
			if err := r.waitTwinInput(ctx, "door", "on"); err != nil {
				stopWatch()
				<-watched
				return err
			}
		}
		err := r.show(ctx, 0, "c2d", args...)
		board.poll()
		if err != nil {
			stopWatch()
			<-watched
			return err
		}
	}

	r.say("\n== 7. stop the agent (SIGTERM): every output returns to its safe state (relay1 goes off)")
	r.say("   $ kill -TERM <c2d-agent>")
	if err := agent.stop(r); err != nil {
		stopWatch()
		<-watched
		return err
	}
	board.poll()
	st, err := simhw.ReadState(boardFile)
	stopWatch()
	<-watched
	if err != nil {
		return err
	}
	r.say("   board after stop: %s (closed=%v)", boardLine(st), st.Closed)
	if !st.Closed {
		return errors.New("agent stopped without closing the board (outputs not driven safe)")
	}
	for name, o := range st.Outputs {
		if o.On != o.Safe {
			return fmt.Errorf("after SIGTERM %s is %v, its safe state is %v", name, onOff(o.On), onOff(o.Safe))
		}
	}
	r.say("\n== 8. stop the hub (SIGTERM)")
	return hub.stop(r)
}

// feedbackRow matches one record of the demo's messages (ids demo-1, demo-2, ...) in c2d's table.
var feedbackRow = regexp.MustCompile(`\sdemo-[0-9]+\s`)

// proc is a started background program.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	once sync.Once
	serr error
}

func (r *run) start(ctx context.Context, name, bin string, args ...string) (*proc, error) {
	r.say("   $ %s %s &", bin, strings.Join(args, " "))
	logPath := filepath.Join(r.dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(r.opt.BinDir, bin), args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = r.env
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM and waits; a process that does not exit in 20 s is killed and reported.
func (p *proc) stop(r *run) error {
	p.once.Do(func() {
		select {
		case <-p.done:
			p.serr = fmt.Errorf("%s exited early: %v (log: %s)\n%s", p.name, p.err, p.log, tail(p.log))
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				p.serr = fmt.Errorf("%s did not exit cleanly on SIGTERM: %v\n%s", p.name, p.err, tail(p.log))
			} else {
				r.say("   %s exited cleanly", p.name)
			}
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.serr = fmt.Errorf("%s ignored SIGTERM for 20s\n%s", p.name, tail(p.log))
		}
	})
	return p.serr
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "   | " + strings.Join(lines, "\n   | ")
}

type endpoints struct {
	MQTT string `json:"mqtt"`
	HTTP string `json:"http"`
}

func waitEndpoints(ctx context.Context, path string, hub *proc) (endpoints, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ep endpoints
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &ep) == nil && ep.HTTP != "" {
			return ep, nil
		}
		select {
		case <-hub.done:
			return ep, fmt.Errorf("c2d-hub exited: %v\n%s", hub.err, tail(hub.log))
		case <-ctx.Done():
			return ep, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return ep, fmt.Errorf("c2d-hub wrote no %s within 30s\n%s", path, tail(hub.log))
		}
	}
}

func (r *run) waitConnected(ctx context.Context, agent *proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := r.output(ctx, "c2d", "device", "show", device, "-o", "json")
		if err == nil {
			var d struct {
				ConnectionState string `json:"connectionState"`
			}
			if json.Unmarshal([]byte(out), &d) == nil && d.ConnectionState == "Connected" {
				return nil
			}
		}
		select {
		case <-agent.done:
			return fmt.Errorf("c2d-agent exited: %v\n%s", agent.err, tail(agent.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent not connected within 30s\n%s", tail(agent.log))
		}
	}
}

// waitTwinInput waits until the device twin reports input name in state (the agent reports
// changes coalesced, at most one update a second).
func (r *run) waitTwinInput(ctx context.Context, name, state string) error {
	began := time.Now()
	for {
		out, err := r.output(ctx, "c2d", "twin", "show", device, "-o", "json")
		if err != nil {
			return err
		}
		var tw struct {
			Properties struct {
				Reported struct {
					Inputs map[string]struct {
						State string `json:"state"`
					} `json:"inputs"`
				} `json:"reported"`
			} `json:"properties"`
		}
		if json.Unmarshal([]byte(out), &tw) == nil && tw.Properties.Reported.Inputs[name].State == state {
			r.say("   (the twin reports %s %s now: reported properties follow a change within a second)", name, state)
			return nil
		}
		if time.Since(began) > 5*time.Second {
			return fmt.Errorf("the twin of %s does not report input %s %s 5 s after the change: %s", device, name, state, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond): // polling the twin with a deadline
		}
	}
}

// output runs a command quietly and returns its stdout.
func (r *run) output(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(r.opt.BinDir, bin), args...)
	cmd.Env = r.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// show prints a command line, runs it with its output shown, and checks its exit code.
func (r *run) show(ctx context.Context, wantExit int, bin string, args ...string) error {
	_, err := r.showOutput(ctx, wantExit, bin, args...)
	return err
}

func (r *run) showOutput(ctx context.Context, wantExit int, bin string, args ...string) (string, error) {
	r.say("   $ %s %s", bin, quoteArgs(args))
	cmd := exec.CommandContext(ctx, filepath.Join(r.opt.BinDir, bin), args...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line != "" {
			r.say("   %s", line)
		}
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return "", fmt.Errorf("%s: %w", bin, err)
	}
	if code != wantExit {
		return "", fmt.Errorf("%s %s exited %d, want %d", bin, quoteArgs(args), code, wantExit)
	}
	if code != 0 {
		r.say("   (exit code %d, as expected)", code)
	}
	return string(out), nil
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " ;&*?") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// boardLog follows the simulated board's transition log and prints the board after each
// transition, so the narration shows every change (a blink included) in order.
type boardLog struct {
	r      *run
	path   string
	mu     sync.Mutex
	offset int64
	state  map[string]bool
}

func newBoardLog(r *run, path string) (*boardLog, error) {
	b := &boardLog{r: r, path: path, state: map[string]bool{}}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read(false)
	if len(b.state) == 0 {
		return nil, fmt.Errorf("no outputs in %s: did the agent open its simulated board?", path)
	}
	return b, nil
}

// read applies the complete lines written since the last call, printing each when show is set.
func (b *boardLog) read(show bool) {
	f, err := os.Open(b.path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(b.offset, io.SeekStart); err != nil {
		return
	}
	data, _ := io.ReadAll(f)
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return
	}
	ts, err := simhw.ParseTransitions(data[:end+1])
	if err != nil {
		return
	}
	b.offset += int64(end + 1)
	for _, t := range ts {
		b.state[t.Output] = t.On
		if show {
			b.r.say("   board %s  %s", t.Time.Local().Format("15:04:05.000"), b.lineLocked())
		}
	}
}

func (b *boardLog) poll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read(true)
}

func (b *boardLog) line() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lineLocked()
}

func (b *boardLog) lineLocked() string {
	st := simhw.State{Outputs: map[string]simhw.OutputState{}}
	for n, on := range b.state {
		st.Outputs[n] = simhw.OutputState{On: on}
	}
	return boardLine(st)
}

// watch prints transitions while a command runs. It polls the log: the display is the point
// here, not synchronisation (each step ends with a final poll after the command returned).
func (b *boardLog) watch(ctx context.Context) {
	for {
		b.poll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func boardLine(st simhw.State) string {
	names := make([]string, 0, len(st.Outputs))
	for n := range st.Outputs {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		mark := "○"
		if st.Outputs[n].On {
			mark = "●"
		}
		parts[i] = fmt.Sprintf("%s %s", n, mark)
	}
	return strings.Join(parts, "  ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
