package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/agent/dispatch"
)

// twinGetTimeout bounds the twin GET after connecting.
const twinGetTimeout = 10 * time.Second

// follower makes the outputs with `desired: true` follow the twin's
// properties.desired.outputs.<name> ("on"/"off"): the whole desired section on every connect (a
// twin GET), each change as it is notified. A desired state is applied as an on/off job through
// the dispatcher, so it waits for a command running on that output and never interrupts one;
// commands after it win until the desired state changes again. Unknown names and values are
// reported in reported.desiredErrors, never ignored.
type follower struct {
	a     *agent
	names map[string]bool // outputs that follow desired state

	mu      sync.Mutex
	version int64             // the desired $version last taken
	want    map[string]string // name → "on"/"off"
	errs    map[string]string // name → why its desired value is not followed
	seen    map[string]bool   // every name ever in errs (cleared with null in the twin)
}

func newFollower(a *agent, names []string) *follower {
	f := &follower{a: a, names: map[string]bool{}, want: map[string]string{}, errs: map[string]string{}, seen: map[string]bool{}}
	for _, n := range names {
		f.names[n] = true
	}
	return f
}

// connected reads the whole twin (in its own goroutine: never in paho's callbacks).
func (f *follower) connected() {
	go func() {
		body, err := f.a.client.GetTwin(twinGetTimeout)
		if err != nil {
			f.a.log.Info("could not read the twin; desired output state applies on the next change or connect", "err", err)
			return
		}
		var tw struct {
			Desired json.RawMessage `json:"desired"`
		}
		if err := json.Unmarshal(body, &tw); err != nil {
			f.a.log.Warn("twin GET answer is not a twin", "err", err)
			return
		}
		f.take(tw.Desired, true)
	}()
}

// notified is conn.Options.Desired (never blocks: hands off).
func (f *follower) notified(patch []byte) {
	p := bytes.Clone(patch)
	go f.take(p, false)
}

// take applies a desired section (full) or patch. Notifications with a $version at or below the
// one taken are stale (Azure's rule after a GET) and dropped.
func (f *follower) take(raw []byte, full bool) {
	var d struct {
		Version int64                      `json:"$version"`
		Outputs map[string]json.RawMessage `json:"outputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		f.a.log.Warn("desired properties are not an object with outputs", "err", err)
		return
	}
	f.mu.Lock()
	if !full && d.Version <= f.version {
		f.mu.Unlock()
		return
	}
	f.version = d.Version
	if full {
		f.want, f.errs = map[string]string{}, map[string]string{}
	}
	var apply []string
	for name, v := range d.Outputs {
		delete(f.errs, name)
		var s *string
		if err := json.Unmarshal(v, &s); err != nil {
			f.fail(name, fmt.Sprintf("desired value %s is not \"on\" or \"off\"", v))
			continue
		}
		switch {
		case !f.names[name]:
			f.fail(name, fmt.Sprintf("no output %q follows desired state on this board (outputs with desired: true: %s)", name, listNames(f.names)))
		case s == nil:
			delete(f.want, name) // no longer desired: the output stays as it is
		case *s == "on" || *s == "off":
			f.want[name] = *s
			apply = append(apply, name)
		default:
			f.fail(name, fmt.Sprintf("desired value %q is not \"on\" or \"off\"", *s))
		}
	}
	want := make(map[string]string, len(apply))
	for _, n := range apply {
		want[n] = f.want[n]
	}
	f.mu.Unlock()
	sort.Strings(apply)
	for _, n := range apply {
		f.apply(n, want[n])
	}
	f.a.reporter.changed()
}

func (f *follower) fail(name, why string) {
	f.errs[name], f.seen[name] = why, true
	f.a.log.Warn("desired output state not followed", "output", name, "reason", why)
}

// apply queues an on/off job when the output is not already in the desired state.
func (f *follower) apply(name, state string) {
	out := f.a.board.Output(name)
	if out == nil || onOff(out.State()) == state && !f.a.dispatcher.Busy(name) {
		return
	}
	kind := action.Off
	if state == "on" {
		kind = action.On
	}
	plan := action.NewPlan("desired:"+name, "", []action.Step{{Action: kind, Target: name}}, action.CompleteOnFinish, time.Time{})
	what := plan.String()
	f.a.dispatcher.Submit(&dispatch.Job{Plan: plan, Done: func(r dispatch.Result) {
		status, out := methodResult(r)
		if status != 200 {
			f.mu.Lock()
			f.fail(name, "applying desired state: "+out.Reason)
			f.mu.Unlock()
			f.a.reporter.changed()
			return
		}
		f.a.log.Info("output follows its desired state", "output", name, "state", state)
		f.a.remember("desired", name, what, "complete", "")
	}})
}

// reportedPart is the follower's part of the reported properties.
func (f *follower) reportedPart() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := map[string]any{}
	for n := range f.seen {
		if why, ok := f.errs[n]; ok {
			errs[n] = why
		} else {
			errs[n] = nil // cleared: null deletes it from the twin
		}
	}
	return map[string]any{"version": f.version, "errors": errs}
}

func listNames(m map[string]bool) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
