package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/agent/conn"
	"github.com/c2d-project/c2d/agent/dispatch"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw"
)

// MethodState is the agent's built-in direct method: the board's state (iothub.BoardState).
const MethodState = "state"

// methodQueue bounds the method calls waiting for the method worker; more are answered 503.
const methodQueue = 32

// keepCommands is how many finished commands `state` lists.
const keepCommands = 10

// methods takes direct-method requests off paho's handler and answers them: `state` from memory,
// an action or a named command by running it through the dispatcher like a C2D message (same
// allowlist and limits), answered when it ends. Nothing here waits on hardware in paho's handler.
type methods struct {
	a   *agent
	in  chan *conn.MethodRequest
	log *slog.Logger
}

func newMethods(a *agent) *methods {
	return &methods{a: a, in: make(chan *conn.MethodRequest, methodQueue), log: a.log.With("component", "methods")}
}

// push is conn.Options.Method: it never blocks.
func (m *methods) push(r *conn.MethodRequest) {
	select {
	case m.in <- r:
	default:
		go m.respond(r, iothub.MethodOverload, iothub.MethodOutcome{Outcome: "busy",
			Reason: fmt.Sprintf("too many method calls waiting (%d); try again", methodQueue)})
	}
}

// run serves requests until done is closed.
func (m *methods) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case r := <-m.in:
			m.serve(r)
		}
	}
}

func (m *methods) respond(r *conn.MethodRequest, status int, payload any) {
	b, err := json.Marshal(payload)
	if err != nil {
		status, b = iothub.MethodFailed, []byte(strconv.Quote("encode answer: "+err.Error()))
	}
	if err := m.a.client.Respond(r, status, b); err != nil {
		m.log.Warn("method answer not sent; the hub times the call out", "method", r.Name, "err", err)
		return
	}
	m.log.Info("method answered", "method", r.Name, "status", status)
}

func (m *methods) serve(r *conn.MethodRequest) {
	if r.ParseErr != nil {
		m.respond(r, iothub.MethodBad, iothub.MethodOutcome{Outcome: "rejected", Reason: "malformed method request: " + r.ParseErr.Error()})
		return
	}
	if r.Name == MethodState {
		m.respond(r, iothub.MethodOK, m.a.boardState())
		return
	}
	msg, status, reason := m.message(r)
	if status != 0 {
		out := iothub.MethodOutcome{Outcome: "rejected", Reason: reason}
		if status == iothub.MethodNotFound {
			out.Outcome = "unknown"
		}
		m.a.remember("method", r.Name, "", iothub.DispositionReject, reason)
		m.respond(r, status, out)
		return
	}
	plan, err := m.a.catalog.Decode(msg, time.Now())
	if err != nil {
		m.a.remember("method", r.Name, "", iothub.DispositionReject, err.Error())
		m.a.count(iothub.DispositionReject, err.Error())
		m.respond(r, iothub.MethodBad, iothub.MethodOutcome{Outcome: "rejected", Reason: err.Error()})
		return
	}
	what := plan.String()
	err = m.a.dispatcher.TrySubmit(&dispatch.Job{Plan: plan, Done: func(res dispatch.Result) {
		status, out := methodResult(res)
		out.Plan = what
		disp := iothub.DispositionComplete
		if status != iothub.MethodOK {
			disp = iothub.DispositionReject
		}
		m.a.remember("method", r.Name, what, disp, out.Reason)
		m.a.count(disp, out.Reason)
		m.respond(r, status, out)
	}})
	var be *dispatch.BusyError
	switch {
	case errors.As(err, &be):
		m.respond(r, iothub.MethodBusy, iothub.MethodOutcome{Outcome: "busy", Plan: what, Reason: be.Error()})
	case err != nil:
		m.respond(r, iothub.MethodFailed, iothub.MethodOutcome{Outcome: "failed", Plan: what, Reason: "not started: the agent is stopping"})
	default:
		m.log.Info("method accepted", "method", r.Name, "plan", what)
	}
}

// methodResult maps how a job ended to a method status and the reason a C2D message would get.
func methodResult(r dispatch.Result) (int, iothub.MethodOutcome) {
	var rej *action.Rejection
	var transient *hw.TransientError
	switch {
	case r.Err == nil:
		return iothub.MethodOK, iothub.MethodOutcome{Outcome: "done", TookMs: r.Elapsed.Milliseconds()}
	case errors.As(r.Err, &rej):
		return iothub.MethodBad, iothub.MethodOutcome{Outcome: "rejected", Reason: rej.Reason}
	case errors.Is(r.Err, dispatch.ErrShutdown):
		return iothub.MethodFailed, iothub.MethodOutcome{Outcome: "failed", Reason: "cut short: the agent is stopping" + safedText(r.Safed)}
	case errors.As(r.Err, &transient):
		return iothub.MethodFailed, iothub.MethodOutcome{Outcome: "failed", Reason: "transient hardware error: " + r.Err.Error() + safedText(r.Safed)}
	default:
		return iothub.MethodFailed, iothub.MethodOutcome{Outcome: "failed", Reason: "hardware error: " + r.Err.Error() + safedText(r.Safed)}
	}
}

// message turns a method call into the C2D message with the same meaning, so that one decoder
// (one allowlist, one set of limits and reasons) judges both. A method named after an action
// (on, off, toggle, pulse, blink) takes the other properties from its payload, a JSON object
// ({"target":"relay1","duration":"2s"}); a method named after one of the config's commands runs
// it and takes no payload. status is non-zero when the call is refused before decoding.
func (m *methods) message(r *conn.MethodRequest) (msg *iothub.Message, status int, reason string) {
	props, err := payloadProps(r.Payload)
	if err != nil {
		return nil, iothub.MethodBad, err.Error()
	}
	if kind, ok := action.ParseKind(r.Name); ok && kind != action.Wait {
		if _, set := props[action.PropAction]; set {
			return nil, iothub.MethodBad, fmt.Sprintf("payload property %q: the method name %q is the action", action.PropAction, r.Name)
		}
		props[action.PropAction] = r.Name
	} else if m.a.hasCommand(r.Name) {
		if len(props) > 0 {
			return nil, iothub.MethodBad, fmt.Sprintf("command %q takes no payload", r.Name)
		}
		props[action.PropCommand] = r.Name
	} else {
		return nil, iothub.MethodNotFound, fmt.Sprintf("no method %q on this board (methods: %s)", r.Name, m.a.methodNames())
	}
	msg = &iothub.Message{MessageID: "method:" + r.Name + ":" + r.RID}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		msg.Properties = append(msg.Properties, iothub.AppProperty{Name: k, Value: props[k]})
	}
	return msg, 0, ""
}

// payloadProps reads a method payload: null or absent, or an object of strings and numbers.
func payloadProps(p []byte) (map[string]string, error) {
	props := map[string]string{}
	s := strings.TrimSpace(string(p))
	if s == "" || s == "null" {
		return props, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(p, &raw); err != nil {
		return nil, fmt.Errorf("payload: want a JSON object of properties such as {\"target\":\"relay1\"}: %v", err)
	}
	for k, v := range raw {
		var str string
		if json.Unmarshal(v, &str) == nil {
			props[k] = str
			continue
		}
		var n json.Number
		if json.Unmarshal(v, &n) == nil {
			props[k] = n.String()
			continue
		}
		return nil, fmt.Errorf("payload property %q: want a string or a number, got %s", k, v)
	}
	return props, nil
}

func (a *agent) hasCommand(name string) bool {
	for _, c := range a.catalog.Commands {
		if c.Name == name {
			return true
		}
	}
	return false
}

func (a *agent) methodNames() string {
	names := []string{MethodState}
	for _, k := range action.Kinds {
		if k != action.Wait {
			names = append(names, string(k))
		}
	}
	for _, c := range a.catalog.Commands {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// recentCommands keeps the last keepCommands finished commands.
type recentCommands struct {
	mu   sync.Mutex
	list []iothub.CommandRecord
}

func (a *agent) remember(via, id, what string, disp iothub.Disposition, reason string) {
	a.recent.mu.Lock()
	defer a.recent.mu.Unlock()
	a.recent.list = append(a.recent.list, iothub.CommandRecord{Via: via, ID: id, What: what, Outcome: string(disp),
		Reason: iothub.TruncateReason(reason), At: time.Now().UTC()})
	if n := len(a.recent.list); n > keepCommands {
		a.recent.list = append([]iothub.CommandRecord(nil), a.recent.list[n-keepCommands:]...)
	}
}

// boardState is the `state` method's answer, from memory only (outputs are never read back).
func (a *agent) boardState() iothub.BoardState {
	st := iothub.BoardState{
		DeviceID: a.deviceID, Version: a.version, Backend: string(a.cfg.Hardware.Backend), ConfigHash: a.configHash,
		Started: a.started.UTC(), UptimeSeconds: time.Since(a.started).Round(time.Millisecond).Seconds(),
		Outputs: map[string]iothub.OutputState{}, Inputs: map[string]iothub.InputState{},
	}
	for _, n := range a.board.Names() {
		o := a.board.Output(n)
		if o == nil {
			continue
		}
		st.Outputs[n] = iothub.OutputState{State: onOff(o.State()), Since: a.since.get(n, a.started).UTC(), Busy: a.dispatcher.Busy(n)}
	}
	for _, n := range a.inputs.Names() {
		if in := a.inputs.Input(n); in != nil {
			on, since := in.State()
			st.Inputs[n] = iothub.InputState{State: onOff(on), Since: since.UTC()}
		}
	}
	a.mu.Lock()
	st.Completed, st.Rejected, st.LastError = a.completed, a.rejected, a.lastErr
	a.mu.Unlock()
	a.recent.mu.Lock()
	st.LastCommands = append([]iothub.CommandRecord{}, a.recent.list...)
	a.recent.mu.Unlock()
	return st
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// sinceBoard wraps the board to note when each output last changed state.
type sinceBoard struct {
	hw.Board
	mu      sync.Mutex
	at      map[string]time.Time
	changed func() // an output changed state (the twin reporter); never blocks
}

func (b *sinceBoard) get(name string, def time.Time) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.at[name]; ok {
		return t
	}
	return def
}

func (b *sinceBoard) Output(name string) hw.Output {
	o := b.Board.Output(name)
	if o == nil {
		return nil
	}
	return sinceOutput{Output: o, b: b}
}

type sinceOutput struct {
	hw.Output
	b *sinceBoard
}

func (o sinceOutput) Set(on bool) error {
	was := o.Output.State()
	if err := o.Output.Set(on); err != nil {
		return err
	}
	if was != on {
		o.b.mu.Lock()
		o.b.at[o.Name()] = time.Now()
		o.b.mu.Unlock()
		if o.b.changed != nil {
			o.b.changed()
		}
	}
	return nil
}

// configHash identifies the config file's content (first 16 hex digits of its sha256), so the
// cloud can tell which boards run which config without seeing it; "" for a config built in Go.
func configHash(cfg *config.Config) string {
	if cfg.Path == "" {
		return ""
	}
	b, err := os.ReadFile(cfg.Path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
