package hw

import (
	"fmt"
	"time"
)

// Pull is the bias an input line is requested with.
type Pull string

const (
	PullNone Pull = "none" // no bias: the circuit drives the line both ways
	PullUp   Pull = "up"   // e.g. a contact to ground: open reads high
	PullDown Pull = "down"
)

// Edge selects which changes of an input are watched. The kernel reports only those edges, so with
// EdgeRising or EdgeFalling the other change is seen only when the next watched edge arrives.
type Edge string

const (
	EdgeBoth    Edge = "both"
	EdgeRising  Edge = "rising"  // physical low → high
	EdgeFalling Edge = "falling" // physical high → low
)

// InputSpec is one input as the board's config declares it, already validated by the agent. The
// line is named as for outputs (OutputSpec.Pin, Chip, Line).
type InputSpec struct {
	Name      string
	Pin       string
	Chip      string
	Line      int // -1 when unused
	Pull      Pull
	ActiveLow bool // logical on is a low line (a contact to ground with a pull-up)
	// Debounce is how long the line must stay unchanged after an edge before its level counts;
	// 0 takes the level at once.
	Debounce time.Duration
	Edge     Edge
}

func (s InputSpec) String() string {
	if s.Pin != "" {
		return fmt.Sprintf("%s (input %s)", s.Name, s.Pin)
	}
	return fmt.Sprintf("%s (input %s line %d)", s.Name, s.Chip, s.Line)
}

// LineSpec returns the spec's line as an OutputSpec, for backends that resolve both alike.
func (s InputSpec) LineSpec() OutputSpec {
	return OutputSpec{Name: s.Name, Kind: KindGPIO, Pin: s.Pin, Chip: s.Chip, Line: s.Line}
}

// InputEvent is one debounced change of an input's logical state.
type InputEvent struct {
	Input string
	On    bool
	At    time.Time
}

// Input is one input line, debounced by its backend.
type Input interface {
	Name() string
	// State is the debounced logical state and when it last changed (when the input was opened,
	// if it never did).
	State() (on bool, since time.Time)
}

// Inputs is an opened set of inputs. Backends watch edges in their own goroutines; consumers
// read State and are told of changes through Notify.
type Inputs interface {
	// Input returns the named input, or nil if the config declared none by that name.
	Input(name string) Input
	// Names lists the inputs in config order.
	Names() []string
	// Notify sets fn to be called after every debounced change (from the backend's goroutines;
	// fn must not block). Changes before Notify are only visible through State.
	Notify(fn func(InputEvent))
	// Close stops watching and releases the lines.
	Close() error
}

// InputError says which input, and which field of its spec, an open failure is about
// (`door.pin: no line "GPIO99"`), like OutputError.
type InputError struct {
	Input string
	Field string
	Err   error
}

func (e *InputError) Error() string {
	if e.Field == "" {
		return e.Input + ": " + e.Err.Error()
	}
	return e.Input + "." + e.Field + ": " + e.Err.Error()
}
func (e *InputError) Unwrap() error { return e.Err }
