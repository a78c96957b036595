package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/c2d-project/c2d/hw"
)

// DefaultDebounce is an input's debounce when the config gives none: long enough for the bounce
// of a mechanical contact or reed switch, short against anything a person does.
const DefaultDebounce = 20 * time.Millisecond

// MaxDebounce bounds debounce: longer than this would hide real changes.
const MaxDebounce = 10 * time.Second

// Input is one declared input: a GPIO line the agent reads and reports. The cloud can read it
// (the twin, the state method) but nothing can drive it.
type Input struct {
	Pin       string       `yaml:"pin"`
	Chip      string       `yaml:"chip"`
	Line      *int         `yaml:"line"`
	Pull      string       `yaml:"pull"`
	ActiveLow bool         `yaml:"active_low"`
	Debounce  ZeroDuration `yaml:"debounce"`
	Edge      string       `yaml:"edge"`
}

// ZeroDuration is a duration that may be zero ("0" or "0s" turns the feature off).
type ZeroDuration struct {
	time.Duration
	Set bool // written in the config
}

func (d *ZeroDuration) setScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 20ms, 0 to turn it off)", s)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", s)
	}
	d.Duration, d.Set = v, true
	return nil
}

func (c *Config) validateInputs(used map[string]string) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	c.InputOrder = order(c.InputOrder, c.Inputs)
	if c.Hardware.Backend == BackendSim && len(c.Inputs) > 0 && c.Hardware.Sim.InputsFile == "" {
		bad("hardware.sim.inputs_file", "required with backend sim when inputs are declared (the file the simulated inputs are read from)")
	}
	for _, name := range c.InputOrder {
		in := c.Inputs[name]
		p := "inputs." + name
		if !nameRE.MatchString(name) {
			bad(p, "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
		}
		if _, dup := c.Outputs[name]; dup {
			bad(p, "outputs.%s has the same name: an input and an output need different names", name)
		}
		if in == nil {
			bad(p, "empty declaration: set pin, or chip with line")
			continue
		}
		switch {
		case in.Pin != "" && (in.Chip != "" || in.Line != nil):
			bad(p, "set pin, or chip with line, not both")
		case in.Pin != "":
			if strings.ContainsAny(in.Pin, " \t/") {
				bad(p+".pin", "%q is not a line name (e.g. GPIO22)", in.Pin)
			} else if prev, ok := used["pin "+in.Pin]; ok {
				bad(p+".pin", "pin %s is already used by %s", in.Pin, prev)
			} else {
				used["pin "+in.Pin] = p
			}
		case in.Chip == "" && in.Line == nil:
			bad(p, "set pin, or chip with line")
		case in.Chip == "":
			bad(p+".chip", "required with line (a chip label such as pinctrl-bcm2711, or gpiochip0)")
		case in.Line == nil:
			bad(p+".line", "required with chip")
		case *in.Line < 0:
			bad(p+".line", "%d is negative", *in.Line)
		default:
			id := fmt.Sprintf("chip %s line %d", in.Chip, *in.Line)
			if prev, ok := used[id]; ok {
				bad(p+".line", "%s is already used by %s", id, prev)
			} else {
				used[id] = p
			}
		}
		if in.Pull == "" {
			in.Pull = string(hw.PullNone)
		}
		switch hw.Pull(in.Pull) {
		case hw.PullUp, hw.PullDown, hw.PullNone:
		default:
			bad(p+".pull", "%q is not one of up, down, none", in.Pull)
		}
		if in.Edge == "" {
			in.Edge = string(hw.EdgeBoth)
		}
		switch hw.Edge(in.Edge) {
		case hw.EdgeBoth, hw.EdgeRising, hw.EdgeFalling:
		default:
			bad(p+".edge", "%q is not one of both, rising, falling", in.Edge)
		}
		if !in.Debounce.Set {
			in.Debounce = ZeroDuration{Duration: DefaultDebounce, Set: true}
		}
		if in.Debounce.Duration > MaxDebounce {
			bad(p+".debounce", "%s is above %s", ZeroDurationString(in.Debounce.Duration), ZeroDurationString(MaxDebounce))
		}
	}
	return errs
}

// ZeroDurationString formats a duration the way the config writes it.
func ZeroDurationString(d time.Duration) string { return Duration{d}.String() }

// InputSpecs lists the inputs for the hardware backend, in config order.
func (c *Config) InputSpecs() []hw.InputSpec {
	specs := make([]hw.InputSpec, 0, len(c.InputOrder))
	for _, name := range c.InputOrder {
		in := c.Inputs[name]
		s := hw.InputSpec{Name: name, Pin: in.Pin, Chip: in.Chip, Line: -1, Pull: hw.Pull(in.Pull), ActiveLow: in.ActiveLow,
			Debounce: in.Debounce.Duration, Edge: hw.Edge(in.Edge)}
		if in.Line != nil {
			s.Line = *in.Line
		}
		specs = append(specs, s)
	}
	return specs
}
