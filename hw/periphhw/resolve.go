package periphhw

import (
	"fmt"
	"strconv"
	"strings"

	"periph.io/x/conn/v3/gpio"

	"github.com/c2d-project/c2d/hw"
)

// Chip is one GPIO chip as resolution and driving see it. On a real system it adapts a
// *gpioioctl.GPIOChip; tests feed tables of fake chips (hwtest.Chip).
type Chip interface {
	Name() string  // kernel name, e.g. "gpiochip0"
	Label() string // e.g. "pinctrl-rp1"
	NumLines() int
	LineName(offset int) string // the kernel's name; "" for an unnamed line
	// Line returns the line to drive. Open only ever calls Out on it (never Read: on the GPIO
	// character device that re-requests the line as an input). If it also has Close() or
	// Close() error, Board.Close calls it to release the line.
	Line(offset int) gpio.PinOut
}

// Resolution says what an output resolved to, for logs and `c2d-agent check-config`.
type Resolution struct {
	Output    string
	Kind      hw.Kind
	Chip      string // GPIO: chip name, e.g. "gpiochip0"
	ChipLabel string // GPIO: chip label, e.g. "pinctrl-rp1"
	Line      int    // GPIO: line offset on the chip
	LineName  string // GPIO: the line's name ("" if unnamed)
	LED       string // LED: name under the LED root
	Path      string // LED: its directory; GPIO: the chip's device node when known
	ActiveLow bool
	Safe      bool
}

func (r Resolution) String() string {
	pol := ""
	if r.ActiveLow {
		pol = ", active-low"
	}
	if r.Kind == hw.KindLED {
		return fmt.Sprintf("%s: led %s (%s)%s, safe %s", r.Output, r.LED, r.Path, pol, onOff(r.Safe))
	}
	name := ""
	if r.LineName != "" {
		name = fmt.Sprintf(" %q", r.LineName)
	}
	return fmt.Sprintf("%s: %s (%s) line %d%s%s, safe %s", r.Output, r.ChipLabel, r.Chip, r.Line, name, pol, onOff(r.Safe))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// notFound is an error text that matches hw.ErrNotFound without "not found" tacked onto it.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == hw.ErrNotFound }

func outErr(spec hw.OutputSpec, field string, err error) error {
	return &hw.OutputError{Output: spec.Name, Field: field, Err: err}
}

// chipList renders the chips for error messages: "pinctrl-rp1 [54 lines], gpio-sim.0 [8 lines]".
func chipList(chips []Chip) string {
	if len(chips) == 0 {
		return "none"
	}
	parts := make([]string, len(chips))
	for i, c := range chips {
		parts[i] = fmt.Sprintf("%s [%d lines]", c.Label(), c.NumLines())
	}
	return strings.Join(parts, ", ")
}

// gpioNumber parses "GPIO<n>" (decimal, no sign); ok is false for anything else.
func gpioNumber(pin string) (int, bool) {
	digits, ok := strings.CutPrefix(pin, "GPIO")
	if !ok || digits == "" || len(digits) > 4 {
		return 0, false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

// findChip finds a chip by label first, then by kernel name ("gpiochip0" or "/dev/gpiochip0").
func findChip(chips []Chip, want string) (Chip, error) {
	var byLabel []Chip
	for _, c := range chips {
		if c.Label() == want {
			byLabel = append(byLabel, c)
		}
	}
	switch len(byLabel) {
	case 1:
		return byLabel[0], nil
	case 0:
	default:
		names := make([]string, len(byLabel))
		for i, c := range byLabel {
			names[i] = c.Name()
		}
		return nil, fmt.Errorf("more than one chip is labelled %q (%s): name the chip instead", want, strings.Join(names, ", "))
	}
	name := strings.TrimPrefix(want, "/dev/")
	for _, c := range chips {
		if c.Name() == name {
			return c, nil
		}
	}
	return nil, notFound(fmt.Sprintf("no chip %q (chips: %s)", want, chipList(chips)))
}

// resolveGPIO finds the chip and line offset a GPIO spec names, following
// shared/reference/gpio-on-linux.md: the kernel's line name first, then "GPIO<n>" as offset n on
// the first pinctrl-* chip; or a chip (label or name) plus offset. chips must be in periph's order
// (pinctrl-* first). Errors are *hw.OutputError naming the field.
func resolveGPIO(spec hw.OutputSpec, chips []Chip) (Chip, int, error) {
	if spec.Chip != "" {
		c, err := findChip(chips, spec.Chip)
		if err != nil {
			return nil, 0, outErr(spec, "chip", err)
		}
		if spec.Pin != "" { // a line name within that chip
			for off := 0; off < c.NumLines(); off++ {
				if c.LineName(off) == spec.Pin {
					return c, off, nil
				}
			}
			return nil, 0, outErr(spec, "pin", notFound(fmt.Sprintf("no line %q on chip %s (%s, %d lines)", spec.Pin, c.Label(), c.Name(), c.NumLines())))
		}
		if spec.Line < 0 || spec.Line >= c.NumLines() {
			return nil, 0, outErr(spec, "line", notFound(fmt.Sprintf("no line %d on chip %s (%s has lines 0..%d)", spec.Line, c.Label(), c.Name(), c.NumLines()-1)))
		}
		return c, spec.Line, nil
	}
	if spec.Pin == "" {
		return nil, 0, outErr(spec, "pin", fmt.Errorf("no pin, and no chip and line, given"))
	}
	type hit struct {
		c   Chip
		off int
	}
	var hits []hit
	for _, c := range chips {
		for off := 0; off < c.NumLines(); off++ {
			// "<chip name>-<line name>" is how periph registers a name an earlier chip already
			// had; accept it so such a line can be named on its own.
			if n := c.LineName(off); n != "" && (n == spec.Pin || c.Name()+"-"+n == spec.Pin) {
				hits = append(hits, hit{c, off})
			}
		}
	}
	if len(hits) == 1 {
		return hits[0].c, hits[0].off, nil
	}
	if len(hits) > 1 {
		where := make([]string, len(hits))
		for i, h := range hits {
			where[i] = fmt.Sprintf("%s (%s) line %d", h.c.Label(), h.c.Name(), h.off)
		}
		return nil, 0, outErr(spec, "pin", fmt.Errorf("line name %q is on more than one chip (%s): give chip and line instead", spec.Pin, strings.Join(where, ", ")))
	}
	missing := notFound(fmt.Sprintf("no line %q (chips: %s)", spec.Pin, chipList(chips)))
	n, ok := gpioNumber(spec.Pin)
	if !ok {
		return nil, 0, outErr(spec, "pin", missing)
	}
	for _, c := range chips {
		if !strings.HasPrefix(c.Label(), "pinctrl-") {
			continue
		}
		if n >= c.NumLines() {
			return nil, 0, outErr(spec, "pin", missing)
		}
		// A chip that names line n "GPIO<m>" with m != n contradicts the offset reading: refuse
		// rather than guess which one the owner meant.
		if m, isGPIO := gpioNumber(c.LineName(n)); isGPIO && m != n {
			return nil, 0, outErr(spec, "pin", notFound(fmt.Sprintf("no line %q, and line %d of %s is named %q: give chip and line instead", spec.Pin, n, c.Label(), c.LineName(n))))
		}
		return c, n, nil
	}
	return nil, 0, outErr(spec, "pin", missing)
}
