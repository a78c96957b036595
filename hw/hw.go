package hw

import (
	"errors"
	"fmt"
)

// Kind tells what an output drives.
type Kind string

const (
	KindGPIO Kind = "gpio" // a line of a GPIO chip (character device)
	KindLED  Kind = "led"  // /sys/class/leds/<name>
)

// OutputSpec is one output as the board's config declares it, already validated by the agent.
type OutputSpec struct {
	Name string // the config's name for it, e.g. "relay1", "act"
	Kind Kind

	// GPIO: Pin is a line name ("GPIO17", "SDA1") resolved by name first and, for "GPIO<n>", as
	// offset n on the first pinctrl-* chip; or Chip (a chip label or name such as "gpiochip0") plus
	// Line (offset). Line is -1 when unused.
	Pin       string
	Chip      string
	Line      int
	ActiveLow bool // logical on drives the line low

	// LED: the name under /sys/class/leds.
	LED string

	// Safe is the logical state the output takes at start-up, on shutdown and when an action is cut
	// short.
	Safe bool
}

func (s OutputSpec) String() string {
	switch s.Kind {
	case KindLED:
		return fmt.Sprintf("%s (led %s)", s.Name, s.LED)
	default:
		if s.Pin != "" {
			return fmt.Sprintf("%s (gpio %s)", s.Name, s.Pin)
		}
		return fmt.Sprintf("%s (gpio %s line %d)", s.Name, s.Chip, s.Line)
	}
}

// Output is one switchable output. Implementations never read the hardware back (reading a GPIO
// output re-requests it as an input on the character device): State is the last commanded state.
// Set is safe for concurrent use, but the agent serialises actions per output anyway.
type Output interface {
	Name() string
	// Set drives the output to the logical state on (ActiveLow is applied by the driver).
	Set(on bool) error
	// State is the last logical state successfully commanded.
	State() bool
}

// Board is an opened hardware backend with every configured output, each already driven to its
// safe state when Open returned.
type Board interface {
	// Output returns the named output, or nil if the config declared none by that name.
	Output(name string) Output
	// Names lists the outputs in config order.
	Names() []string
	// Healthy returns nil while the backend can still drive its outputs (the systemd watchdog is fed
	// only while it does).
	Healthy() error
	// Close drives every output to its safe state and releases the hardware.
	Close() error
}

// ErrNotFound is wrapped by Open when a configured pin, chip or LED does not exist
// (`outputs.relay1.pin: no line "GPIO99"`).
var ErrNotFound = errors.New("not found")

// TransientError marks a failure worth retrying later (the agent abandons the message instead of
// rejecting it): EBUSY, EAGAIN, a driver that went away and came back.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return "transient hardware error: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// ErrClosed is returned by Output.Set after the board was closed.
var ErrClosed = errors.New("hardware backend closed")

// OutputError says which output, and which field of its spec, an Open failure is about. Its text
// reads `relay1.pin: no line "GPIO99" (...)`, so the agent can prefix its config path with
// fmt.Errorf("outputs.%w", err) and still match causes with errors.Is (ErrNotFound) or errors.As.
type OutputError struct {
	Output string // OutputSpec.Name
	Field  string // "pin", "chip", "line", "led", "name"; empty when about the output as a whole
	Err    error
}

func (e *OutputError) Error() string {
	if e.Field == "" {
		return e.Output + ": " + e.Err.Error()
	}
	return e.Output + "." + e.Field + ": " + e.Err.Error()
}
func (e *OutputError) Unwrap() error { return e.Err }
