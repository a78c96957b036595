package action

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind is what a step does to its output.
type Kind string

const (
	On     Kind = "on"     // drive the output on
	Off    Kind = "off"    // drive the output off
	Toggle Kind = "toggle" // invert the last commanded state
	Blink  Kind = "blink"  // Count cycles of On then Off, then back to the state before
	Pulse  Kind = "pulse"  // on for Duration, then back to the state before
	Wait   Kind = "wait"   // command steps only: pause for Duration
)

// Kinds lists the actions a message may ask for, in documentation order.
var Kinds = []Kind{On, Off, Toggle, Blink, Pulse}

// ParseKind accepts one of Kinds (not Wait, which only commands use).
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// CompleteOn says when a message is completed: after its last step (finish, the default) or as soon
// as its first step moved an output (start), for actions too long to keep the hub waiting.
type CompleteOn string

const (
	CompleteOnFinish CompleteOn = "finish"
	CompleteOnStart  CompleteOn = "start"
)

// Step is one thing the executor does.
type Step struct {
	Action   Kind
	Target   string        // output name; empty for Wait
	Count    int           // Blink: cycles
	On, Off  time.Duration // Blink: time on and off per cycle
	Duration time.Duration // Pulse: time on; Wait: the pause
}

// Busy is how long the step keeps its output (or, for Wait, the command) busy. It saturates at the
// largest time.Duration instead of wrapping (saturate.go), so a huge blink is "too long", never
// negative.
func (s Step) Busy() time.Duration {
	switch s.Action {
	case Blink:
		return mulDur(s.Count, addDur(s.On, s.Off))
	case Pulse, Wait:
		return s.Duration
	}
	return 0
}

// Busy is the plan's worst-case running time: the sum of its steps' busy times, saturating.
func (p *Plan) Busy() time.Duration {
	var total time.Duration
	for _, s := range p.Steps {
		total = addDur(total, s.Busy())
	}
	return total
}

func (s Step) String() string {
	switch s.Action {
	case Blink:
		return fmt.Sprintf("blink %s %d× (%s on, %s off)", s.Target, s.Count, FormatDuration(s.On), FormatDuration(s.Off))
	case Pulse:
		return fmt.Sprintf("pulse %s for %s", s.Target, FormatDuration(s.Duration))
	case Wait:
		return "wait " + FormatDuration(s.Duration)
	}
	return fmt.Sprintf("%s %s", s.Action, s.Target)
}

// Plan is a validated message: the steps to run, in order.
type Plan struct {
	MessageID  string
	Command    string // the named command, if the message asked for one
	Steps      []Step
	Targets    []string // every output the steps touch, first use first
	CompleteOn CompleteOn
	Expiry     time.Time // the message's $.exp (zero: none), re-checked when the plan starts
}

func (p *Plan) String() string {
	parts := make([]string, len(p.Steps))
	for i, s := range p.Steps {
		parts[i] = s.String()
	}
	if p.Command != "" {
		return "command " + p.Command + ": " + strings.Join(parts, ", ")
	}
	return strings.Join(parts, ", ")
}

// NewPlan fills Targets from the steps.
func NewPlan(id, command string, steps []Step, completeOn CompleteOn, expiry time.Time) *Plan {
	p := &Plan{MessageID: id, Command: command, Steps: steps, CompleteOn: completeOn, Expiry: expiry}
	seen := map[string]bool{}
	for _, s := range steps {
		if s.Target != "" && !seen[s.Target] {
			seen[s.Target] = true
			p.Targets = append(p.Targets, s.Target)
		}
	}
	return p
}

// Rejection is a refusal with the reason the operator sees. Reasons are stable API: tests pin them.
type Rejection struct{ Reason string }

func (r *Rejection) Error() string { return r.Reason }

func reject(format string, args ...any) *Rejection {
	return &Rejection{Reason: fmt.Sprintf(format, args...)}
}

// MaxMillis is the largest whole number of milliseconds ParseDuration accepts (24 h).
const MaxMillis = int64(24 * time.Hour / time.Millisecond)

// ParseDuration reads a duration property or config value: Go syntax ("250ms", "1.5s", "2m") or a
// whole number of milliseconds ("250", at most MaxMillis). It must be positive. A value beyond
// what a time.Duration holds is "too large", never wrapped.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty value")
	}
	if isDigits(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms > MaxMillis {
			return 0, fmt.Errorf("%q is too large (at most %d ms)", s, MaxMillis)
		}
		if ms == 0 {
			return 0, fmt.Errorf("%q is not positive", s)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if wellFormedDuration(s) {
			// time.ParseDuration refuses a well-formed value only when it overflows int64.
			return 0, fmt.Errorf("%q is too large (at most %s)", s, FormatDuration(maxDuration.Truncate(time.Hour)))
		}
		return 0, fmt.Errorf("%q is not a duration (e.g. 250ms, 1.5s, or whole milliseconds)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return d, nil
}

// wellFormedDuration reports whether s has time.ParseDuration's syntax — [-+] then one or more
// number+unit pairs, a number being digits with an optional fraction — whatever its size.
func wellFormedDuration(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for s != "" {
		i, digits := 0, 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i, digits = i+1, digits+1
		}
		if i < len(s) && s[i] == '.' {
			i++
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i, digits = i+1, digits+1
			}
		}
		if digits == 0 {
			return false
		}
		s = s[i:]
		unit := ""
		for _, u := range []string{"ns", "us", "µs", "μs", "ms", "s", "m", "h"} {
			if strings.HasPrefix(s, u) && len(u) > len(unit) {
				unit = u
			}
		}
		if unit == "" {
			return false
		}
		s = s[len(unit):]
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatDuration renders d compactly: 10m rather than 10m0s, 1h rather than 1h0m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
