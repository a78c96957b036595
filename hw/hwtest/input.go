package hwtest

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/periphhw"
)

// In implements gpio.PinIn the way the GPIO character device does: the line becomes an input with
// that bias (a line nobody drives then reads its pull), and edges are queued from now on.
func (p *Pin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	p.pull, p.edge = pull, edge
	if p.edges == nil {
		p.edges = make(chan struct{}, 1024)
		p.halt = make(chan struct{}, 1)
	}
	driven := p.driven
	p.mu.Unlock()
	if !driven {
		p.Pin.Lock()
		switch pull {
		case gpio.PullUp:
			p.Pin.L = gpio.High
		case gpio.PullDown:
			p.Pin.L = gpio.Low
		}
		p.Pin.Unlock()
	}
	return nil
}

// Requested returns the pull and edge the backend asked for with In.
func (p *Pin) Requested() (gpio.Pull, gpio.Edge) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pull, p.edge
}

// Drive sets the level the outside world puts on an input line and queues an edge event when the
// level changed and the requested edges include it, as the kernel would.
func (p *Pin) Drive(l gpio.Level) {
	p.Pin.Lock()
	was := p.Pin.L
	p.Pin.L = l
	p.Pin.Unlock()
	p.mu.Lock()
	p.driven = true
	edges, edge := p.edges, p.edge
	p.mu.Unlock()
	if was == l || edges == nil {
		return
	}
	if edge == gpio.BothEdges || (edge == gpio.RisingEdge && l == gpio.High) || (edge == gpio.FallingEdge && l == gpio.Low) {
		select {
		case edges <- struct{}{}:
		default: // the kernel's event FIFO overflows too; the level is still right
		}
	}
}

// WaitForEdge implements gpio.PinIn with the character device's meaning of 0 (no deadline);
// Halt interrupts it.
func (p *Pin) WaitForEdge(timeout time.Duration) bool {
	p.mu.Lock()
	edges, halt := p.edges, p.halt
	failing := p.failWaits > 0
	if failing {
		p.failWaits--
	}
	p.mu.Unlock()
	if edges == nil || failing {
		return false
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	select {
	case <-edges:
		return true
	case <-halt:
		return false
	case <-deadline:
		return false
	}
}

// FailWaits makes the next n WaitForEdge calls fail at once, as a read error on the line's
// file descriptor would.
func (p *Pin) FailWaits(n int) {
	p.mu.Lock()
	p.failWaits = n
	p.mu.Unlock()
}

// Halt implements conn.Resource: it interrupts a WaitForEdge in progress (or the next one).
func (p *Pin) Halt() error {
	p.mu.Lock()
	halt := p.halt
	p.mu.Unlock()
	if halt != nil {
		select {
		case halt <- struct{}{}:
		default:
		}
	}
	return nil
}

// Inputs is a hw.Inputs for unit tests: periphhw's real input logic (pull, active-low, edge
// waiting, debounce) over fake lines the test drives with Drive or Set.
type Inputs struct {
	*periphhw.Inputs
	pins map[string]*Pin
}

// NewInputs opens one fake line per spec (each on its own chip line, named after spec.Pin or at
// spec.Line); Close runs in t.Cleanup.
func NewInputs(t testing.TB, specs []hw.InputSpec) *Inputs { return NewInputsLogged(t, specs, nil) }

// NewInputsLogged is NewInputs with the backend's log going to logger.
func NewInputsLogged(t testing.TB, specs []hw.InputSpec, logger *slog.Logger) *Inputs {
	t.Helper()
	c := NewChip("gpiochip0", "pinctrl-hwtest")
	pins := map[string]*Pin{}
	for _, s := range specs {
		p := &Pin{Pin: gpiotest.Pin{N: s.Pin, Num: len(c.Pins)}}
		if s.Pin == "" {
			for len(c.Pins) <= s.Line {
				c.Pins = append(c.Pins, &Pin{Pin: gpiotest.Pin{Num: len(c.Pins)}})
			}
			p = c.Pins[s.Line]
		} else {
			c.Pins = append(c.Pins, p)
		}
		pins[s.Name] = p
	}
	sys := periphhw.System{Chips: []periphhw.Chip{c}}
	specs = append([]hw.InputSpec(nil), specs...)
	for i := range specs {
		if specs[i].Pin == "" {
			specs[i].Chip = c.ChipLabel // every fake line is on the one chip
		} else {
			specs[i].Chip = ""
		}
	}
	in, err := sys.OpenInputs(specs, periphhw.InputOptions{Logger: logger})
	if err != nil {
		t.Fatalf("hwtest.NewInputs: %v", err)
	}
	t.Cleanup(func() { _ = in.Close() })
	return &Inputs{Inputs: in, pins: pins}
}

// Pin returns the fake line behind an input.
func (s *Inputs) Pin(input string) *Pin {
	p, ok := s.pins[input]
	if !ok {
		panic(fmt.Sprintf("hwtest: no input %q", input))
	}
	return p
}

// Set drives an input's line to the level that reads as the logical state on (active-low
// applied), as a contact closing or opening would.
func (s *Inputs) Set(input string, on bool) {
	for _, in := range s.Resolutions() {
		if in.Output == input {
			s.Pin(input).Drive(gpio.Level(on != in.ActiveLow))
			return
		}
	}
	panic(fmt.Sprintf("hwtest: no input %q", input))
}
