package simhw

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/c2d-project/c2d/hw"
)

// State is the content of the state file.
type State struct {
	Updated time.Time              `json:"updated"`
	Seq     uint64                 `json:"seq"`    // seq of the last transition (as in the log)
	Closed  bool                   `json:"closed"` // Close ran: every output is in its safe state
	Outputs map[string]OutputState `json:"outputs"`
}

// OutputState is one output in the state file.
type OutputState struct {
	On        bool    `json:"on"`
	Safe      bool    `json:"safe"`
	Kind      hw.Kind `json:"kind"`
	Pin       string  `json:"pin,omitempty"`
	Chip      string  `json:"chip,omitempty"`
	Line      *int    `json:"line,omitempty"`
	LED       string  `json:"led,omitempty"`
	ActiveLow bool    `json:"active_low,omitempty"`
	Level     string  `json:"level"`   // physical level: "high" or "low"
	Changes   uint64  `json:"changes"` // state changes since Open, not counting Open's safe drive
}

// Transition is one line of the transition log.
type Transition struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Output string    `json:"output"`
	On     bool      `json:"on"`
	Cause  string    `json:"cause"` // CauseOpen, CauseSet or CauseClose
}

// Causes of a transition.
const (
	CauseOpen  = "open"  // Open drove the output to its safe state
	CauseSet   = "set"   // Output.Set changed the state
	CauseClose = "close" // Close drove the output back to its safe state
)

// ReadState reads a state file.
func ReadState(path string) (State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return State{}, err
	}
	s, err := ParseState(b)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseState parses the content of a state file.
func ParseState(b []byte) (State, error) {
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("parse state: %w", err)
	}
	if dec.More() {
		return State{}, errors.New("parse state: trailing data after the JSON object")
	}
	if s.Outputs == nil {
		return State{}, errors.New("parse state: no outputs object")
	}
	return s, nil
}

// ReadTransitions reads a transition log. A last line without its newline is a write in
// progress and is left out; any other malformed line is an error naming its line number.
func ReadTransitions(path string) ([]Transition, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ts, err := ParseTransitions(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, nil
}

// ParseTransitions parses the content of a transition log (see ReadTransitions).
func ParseTransitions(b []byte) ([]Transition, error) {
	if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
		b = b[:i+1] // drop a partial last line (also when there is no newline at all: i == -1)
	}
	var ts []Transition
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var t Transition
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("line %d: trailing data", n)
		}
		if t.Output == "" || t.Seq == 0 {
			return nil, fmt.Errorf("line %d: missing seq or output", n)
		}
		ts = append(ts, t)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ts, nil
}
