package periphhw

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/c2d-project/c2d/hw"
)

// InputLine is what an input needs of a line: periph's gpio.PinIn with the GPIO character
// device's semantics — WaitForEdge(0) waits without a deadline and Halt interrupts it.
// *gpioioctl.GPIOLine and hwtest.Pin have them.
type InputLine interface {
	In(pull gpio.Pull, edge gpio.Edge) error
	Read() gpio.Level
	WaitForEdge(timeout time.Duration) bool
	Halt() error
}

// InputOptions configure OpenInputs.
type InputOptions struct {
	// Taken are the lines the board's outputs hold: an input resolving to one of them is refused
	// (requesting it as an input would silently turn the output into an input).
	Taken []Resolution
	// Logger receives one line per input at open, and a warning when waiting for edges fails;
	// nil discards.
	Logger *slog.Logger
}

// Inputs is an opened set of input lines. It implements hw.Inputs.
type Inputs struct {
	ins    []*input
	byName map[string]*input
	log    *slog.Logger

	mu     sync.Mutex
	notify func(hw.InputEvent)
	closed bool
	stop   chan struct{} // closed by Close
}

var _ hw.Inputs = (*Inputs)(nil)

type input struct {
	spec hw.InputSpec
	res  Resolution
	line InputLine
	set  *Inputs
	done chan struct{}

	mu    sync.Mutex
	on    bool
	since time.Time
}

// OpenInputs opens the real hardware's input lines (see Open for periph's one enumeration).
func OpenInputs(specs []hw.InputSpec, opts InputOptions) (hw.Inputs, error) {
	if len(specs) == 0 {
		return (&System{}).OpenInputs(nil, opts)
	}
	line := make([]hw.OutputSpec, len(specs))
	for i, s := range specs {
		line[i] = s.LineSpec()
	}
	sys, err := Kernel(line)
	if err != nil {
		return nil, err
	}
	return sys.OpenInputs(specs, opts)
}

// OpenInputs resolves every input on sys like an output's line, requests each as an input with
// its pull and edges, reads its first state and starts one goroutine per input that waits on the
// kernel's edge events (never polling). Errors are *hw.InputError.
func (sys System) OpenInputs(specs []hw.InputSpec, opts InputOptions) (*Inputs, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	taken := map[string]string{}
	for _, r := range opts.Taken {
		if r.Kind == hw.KindGPIO {
			taken[fmt.Sprintf("%s %d", r.Chip, r.Line)] = "output " + r.Output
		}
	}
	s := &Inputs{byName: map[string]*input{}, log: log, stop: make(chan struct{})}
	var lines []InputLine
	for _, spec := range specs {
		ie := func(field string, err error) error { return &hw.InputError{Input: spec.Name, Field: field, Err: err} }
		if spec.Name == "" || s.byName[spec.Name] != nil {
			return nil, ie("name", errors.New("empty or repeated input name"))
		}
		c, off, err := resolveGPIO(spec.LineSpec(), sys.Chips)
		if err != nil {
			var oe *hw.OutputError
			if errors.As(err, &oe) {
				return nil, ie(oe.Field, oe.Err)
			}
			return nil, ie("", err)
		}
		field := "pin"
		if spec.Pin == "" {
			field = "line"
		}
		key := fmt.Sprintf("%s %d", c.Name(), off)
		if other, dup := taken[key]; dup {
			return nil, ie(field, fmt.Errorf("%s (%s) line %d is already used by %s", c.Label(), c.Name(), off, other))
		}
		taken[key] = "input " + spec.Name
		l, ok := c.Line(off).(InputLine)
		if !ok {
			return nil, ie(field, fmt.Errorf("line %d of %s cannot be read as an input", off, c.Label()))
		}
		r := Resolution{Output: spec.Name, Kind: hw.KindGPIO, Chip: c.Name(), ChipLabel: c.Label(), Line: off, LineName: c.LineName(off), ActiveLow: spec.ActiveLow}
		in := &input{spec: spec, res: r, line: l, set: s, done: make(chan struct{})}
		s.ins = append(s.ins, in)
		s.byName[spec.Name] = in
		lines = append(lines, l)
	}
	for i, in := range s.ins {
		if err := in.line.In(pullOf(in.spec.Pull), edgeOf(in.spec.Edge)); err != nil {
			for _, l := range lines[:i] {
				release(l)
			}
			if c, ok := in.line.(interface{ Consumer() string }); ok && c.Consumer() != "" {
				err = fmt.Errorf("%w (line in use by %q)", err, c.Consumer())
			}
			return nil, &hw.InputError{Input: in.spec.Name, Err: fmt.Errorf("request as input (pull %s, edge %s): %w", in.spec.Pull, in.spec.Edge, classify(err))}
		}
	}
	now := time.Now()
	for _, in := range s.ins {
		in.on, in.since = in.level(), now
		log.Info("input ready", "input", in.spec.Name, "resolved", in.res.String(), "pull", in.spec.Pull,
			"edge", in.spec.Edge, "debounce", in.spec.Debounce, "state", onOff(in.on))
		go in.watch()
	}
	return s, nil
}

func pullOf(p hw.Pull) gpio.Pull {
	switch p {
	case hw.PullUp:
		return gpio.PullUp
	case hw.PullDown:
		return gpio.PullDown
	default:
		return gpio.Float
	}
}

func edgeOf(e hw.Edge) gpio.Edge {
	switch e {
	case hw.EdgeRising:
		return gpio.RisingEdge
	case hw.EdgeFalling:
		return gpio.FallingEdge
	default:
		return gpio.BothEdges
	}
}

func release(l any) {
	switch c := l.(type) {
	case interface{ Close() }:
		c.Close()
	case interface{ Close() error }:
		_ = c.Close()
	}
}

func (in *input) level() bool { return bool(in.line.Read()) != in.spec.ActiveLow }

// watch waits for edge events, then for the line to stay quiet for the debounce period (further
// edges restart it: a bouncing contact yields one change), then reads the level.
func (in *input) watch() {
	defer close(in.done)
	failing := 0
	for {
		edge := in.line.WaitForEdge(0)
		if in.set.isClosed() {
			return
		}
		if !edge {
			// A read error (WaitForEdge gives no detail): wait a little rather than spin on a line
			// that keeps failing, and take the level, which may have changed unseen. Said once
			// per run of failures.
			if failing == 0 {
				in.set.log.Warn("input: waiting for an edge failed; retrying every second, the state may lag", "input", in.spec.Name, "resolved", in.res.String())
			}
			failing++
			t := time.NewTimer(errorBackoff)
			select {
			case <-in.set.stop:
				t.Stop()
				return
			case <-t.C:
			}
			in.update(in.level())
			continue
		}
		if failing > 0 {
			in.set.log.Info("input: edges arrive again", "input", in.spec.Name, "failed_waits", failing)
			failing = 0
		}
		if in.spec.Debounce > 0 {
			for in.line.WaitForEdge(in.spec.Debounce) {
			}
			if in.set.isClosed() {
				return
			}
		}
		in.update(in.level())
	}
}

// errorBackoff is the pause after a failed wait for an edge.
const errorBackoff = time.Second

// update records a debounced level and tells the consumer when it is a change.
func (in *input) update(on bool) {
	in.mu.Lock()
	if on == in.on {
		in.mu.Unlock()
		return
	}
	at := time.Now()
	in.on, in.since = on, at
	in.mu.Unlock()
	in.set.mu.Lock()
	fn := in.set.notify
	in.set.mu.Unlock()
	if fn != nil {
		fn(hw.InputEvent{Input: in.spec.Name, On: on, At: at})
	}
}

// Name implements hw.Input.
func (in *input) Name() string { return in.spec.Name }

// State implements hw.Input.
func (in *input) State() (bool, time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.on, in.since
}

// Input implements hw.Inputs.
func (s *Inputs) Input(name string) hw.Input {
	if in, ok := s.byName[name]; ok {
		return in
	}
	return nil
}

// Names implements hw.Inputs.
func (s *Inputs) Names() []string {
	n := make([]string, len(s.ins))
	for i, in := range s.ins {
		n[i] = in.spec.Name
	}
	return n
}

// Resolutions says what each input resolved to, in config order.
func (s *Inputs) Resolutions() []Resolution {
	r := make([]Resolution, len(s.ins))
	for i, in := range s.ins {
		r[i] = in.res
	}
	return r
}

// Notify implements hw.Inputs.
func (s *Inputs) Notify(fn func(hw.InputEvent)) {
	s.mu.Lock()
	s.notify = fn
	s.mu.Unlock()
}

func (s *Inputs) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close implements hw.Inputs: it interrupts every watcher, waits for it and releases its line.
func (s *Inputs) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	for _, in := range s.ins {
		// Halt interrupts a wait in progress; one that starts just after it is interrupted by the
		// next round.
		for stopped := false; !stopped; {
			_ = in.line.Halt()
			select {
			case <-in.done:
				stopped = true
			case <-time.After(10 * time.Millisecond):
			}
		}
		release(in.line)
	}
	return nil
}
