package hwtest

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/pin"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/periphhw"
)

// Write is one Out call a Pin received.
type Write struct {
	Time  time.Time
	Level gpio.Level
}

// Pin is a gpiotest.Pin that records every Out, counts reads, and can fail on demand. Its embedded
// gpiotest.Pin holds the current level (L) as the fake hardware sees it.
type Pin struct {
	gpiotest.Pin
	// Holder, if set, is reported as the line's consumer (another process holding it).
	Holder string

	mu       sync.Mutex
	writes   []Write
	reads    int
	failN    int
	failErr  error
	onWrite  func(Write)
	released bool

	// as an input (input.go)
	pull      gpio.Pull
	edge      gpio.Edge
	edges     chan struct{} // queued edge events
	halt      chan struct{}
	driven    bool // Drive was called: the level no longer follows the pull
	failWaits int
}

var _ gpio.PinIO = (*Pin)(nil)

// Out implements gpio.PinOut; a failure queued with FailNext is returned instead of writing.
func (p *Pin) Out(l gpio.Level) error {
	p.mu.Lock()
	if p.failN > 0 {
		p.failN--
		err := p.failErr
		p.mu.Unlock()
		return err
	}
	if err := p.Pin.Out(l); err != nil {
		p.mu.Unlock()
		return err
	}
	w := Write{Time: time.Now(), Level: l}
	p.writes = append(p.writes, w)
	hook := p.onWrite
	p.mu.Unlock()
	if hook != nil {
		hook(w)
	}
	return nil
}

// Read implements gpio.PinIn and counts the call: backends must never read an output back.
func (p *Pin) Read() gpio.Level {
	p.mu.Lock()
	p.reads++
	p.mu.Unlock()
	return p.Pin.Read()
}

// Func implements pin.PinFunc; on gpioioctl it reads the line, so it counts as a read.
func (p *Pin) Func() pin.Func {
	p.mu.Lock()
	p.reads++
	p.mu.Unlock()
	return p.Pin.Func()
}

// Consumer implements what periph's GPIOLine reports: who held the line at enumeration.
func (p *Pin) Consumer() string { return p.Holder }

// Close records that the backend released the line.
func (p *Pin) Close() {
	p.mu.Lock()
	p.released = true
	p.mu.Unlock()
}

// Level is the fake hardware's current level.
func (p *Pin) Level() gpio.Level {
	p.Pin.Lock()
	defer p.Pin.Unlock()
	return p.Pin.L
}

// Writes returns every successful Out so far.
func (p *Pin) Writes() []Write {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Write(nil), p.writes...)
}

// Reads counts Read and Func calls.
func (p *Pin) Reads() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reads
}

// Released reports whether the backend released the line.
func (p *Pin) Released() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.released
}

// FailNext makes the next n Out calls fail with err; nil err means EBUSY, which backends report
// as *hw.TransientError.
func (p *Pin) FailNext(n int, err error) {
	if err == nil {
		err = syscall.EBUSY
	}
	p.mu.Lock()
	p.failN, p.failErr = n, err
	p.mu.Unlock()
}

// Chip is a fake GPIO chip of Pins. It implements periphhw.Chip.
type Chip struct {
	ChipName, ChipLabel string
	Pins                []*Pin // by line offset; Pin.N is the line name ("" when unnamed)
}

var _ periphhw.Chip = (*Chip)(nil)

// NewChip makes a chip with one line per name ("" for an unnamed line).
func NewChip(name, label string, lineNames ...string) *Chip {
	c := &Chip{ChipName: name, ChipLabel: label}
	for i, n := range lineNames {
		c.Pins = append(c.Pins, &Pin{Pin: gpiotest.Pin{N: n, Num: i}})
	}
	return c
}

func (c *Chip) Name() string             { return c.ChipName }
func (c *Chip) Label() string            { return c.ChipLabel }
func (c *Chip) NumLines() int            { return len(c.Pins) }
func (c *Chip) LineName(off int) string  { return c.Pins[off].N }
func (c *Chip) Line(off int) gpio.PinOut { return c.Pins[off] }
func (c *Chip) ByName(name string) *Pin  { return c.Pins[c.offset(name)] }
func (c *Chip) offset(name string) (off int) {
	for i, p := range c.Pins {
		if p.N == name {
			return i
		}
	}
	panic(fmt.Sprintf("hwtest: chip %s has no line %q", c.ChipName, name))
}

// Pi5Chip mimics a Raspberry Pi 5's RP1 chip: pinctrl-rp1, 54 lines, header lines GPIO0..GPIO27.
func Pi5Chip() *Chip {
	names := make([]string, 0, 54)
	for i := 0; i < 28; i++ {
		names = append(names, fmt.Sprintf("GPIO%d", i))
	}
	names = append(names, "PCIE_RP1_WAKE", "FAN_TACH", "HOST_SDA", "HOST_SCL", "ETH_RST_N", "",
		"CD0_IO0_MICCLK", "CD0_IO0_MICDAT0", "RP1_PCIE_CLKREQ_N", "", "CD0_SDA", "CD0_SCL", "CD1_SDA",
		"CD1_SCL", "USB_VBUS_EN", "USB_OC_N", "RP1_STAT_LED", "FAN_PWM", "CD1_IO0_MICCLK", "2712_WAKE",
		"CD1_IO1_MICDAT1", "EN_MAX_USB_CUR", "", "", "", "")
	return NewChip("gpiochip0", "pinctrl-rp1", names...)
}

// Pi4Chip mimics a Raspberry Pi 4's chip: pinctrl-bcm2711, 58 lines, header lines named by
// function where the device tree does so (SDA1, GPIO_GCLK, SPI_CE0_N, TXD1, ...).
func Pi4Chip() *Chip {
	names := []string{"ID_SDA", "ID_SCL", "SDA1", "SCL1", "GPIO_GCLK", "GPIO5", "GPIO6",
		"SPI_CE1_N", "SPI_CE0_N", "SPI_MISO", "SPI_MOSI", "SPI_SCLK", "GPIO12", "GPIO13", "TXD1",
		"RXD1", "GPIO16", "GPIO17", "GPIO18", "GPIO19", "GPIO20", "GPIO21", "GPIO22", "GPIO23",
		"GPIO24", "GPIO25", "GPIO26", "GPIO27", "RGMII_MDIO", "RGMIO_MDC", "CTS0", "RTS0", "TXD0",
		"RXD0", "SD1_CLK", "SD1_CMD", "SD1_DATA0", "SD1_DATA1", "SD1_DATA2", "SD1_DATA3",
		"PWM0_MISO", "PWM1_MOSI", "STATUS_LED_G_CLK", "SPIFLASH_CE_N", "SDA0", "SCL0", "RGMII_RXCLK",
		"RGMII_RXCTL", "RGMII_RXD0", "RGMII_RXD1", "RGMII_RXD2", "RGMII_RXD3", "RGMII_TXCLK",
		"RGMII_TXCTL", "RGMII_TXD0", "RGMII_TXD1", "RGMII_TXD2", "RGMII_TXD3"}
	return NewChip("gpiochip0", "pinctrl-bcm2711", names...)
}

// Transition is one write to an output of a Board.
type Transition struct {
	Seq    int // 1, 2, ... across the board, in the order writes happened
	Time   time.Time
	Output string
	On     bool       // logical state
	Level  gpio.Level // physical level (differs from On for active-low outputs)
}

// Board is a hw.Board for agent unit tests: periphhw's real board logic (resolution, active-low,
// safe state, error mapping) over fake pins that record every write. Nothing is registered in
// periph's global gpioreg, so tests may run in parallel.
type Board struct {
	*periphhw.Board
	pins map[string]*Pin

	mu      sync.Mutex
	history []Transition
	changed chan struct{} // closed and replaced on every write
}

// NewBoard opens a board with one fake line or LED per spec; Close runs in t.Cleanup (a second
// Close is harmless). Specs name pins however they like: each GPIO spec gets its own line on a
// chip labelled "pinctrl-hwtest" (or on a chip with the spec's label), named after spec.Pin. The
// first len(specs) transitions are Open driving the outputs to their safe state.
func NewBoard(t testing.TB, specs []hw.OutputSpec) *Board {
	t.Helper()
	b := &Board{pins: map[string]*Pin{}, changed: make(chan struct{})}
	chips := map[string]*Chip{}
	var order []*Chip
	chipFor := func(label string) *Chip {
		if c, ok := chips[label]; ok {
			return c
		}
		c := NewChip(fmt.Sprintf("gpiochip%d", len(order)), label)
		chips[label] = c
		order = append(order, c)
		return c
	}
	chipFor("pinctrl-hwtest")
	leds := map[string]*Pin{}
	for i := range specs {
		spec := specs[i]
		var p *Pin
		switch spec.Kind {
		case hw.KindLED:
			p = &Pin{Pin: gpiotest.Pin{N: spec.LED, Num: -1}}
			leds[spec.LED] = p
		default:
			label := "pinctrl-hwtest"
			if spec.Chip != "" {
				label = spec.Chip
			}
			c := chipFor(label)
			name := spec.Pin
			if spec.Pin == "" {
				for len(c.Pins) <= spec.Line {
					c.Pins = append(c.Pins, &Pin{Pin: gpiotest.Pin{Num: len(c.Pins)}})
				}
				p = c.Pins[spec.Line]
			} else {
				p = &Pin{Pin: gpiotest.Pin{N: name, Num: len(c.Pins)}}
				c.Pins = append(c.Pins, p)
			}
		}
		p.onWrite = func(w Write) { b.record(spec, w) }
		b.pins[spec.Name] = p
	}
	sys := periphhw.System{LED: func(name string) (gpio.PinOut, error) {
		if p, ok := leds[name]; ok {
			return p, nil
		}
		return nil, fmt.Errorf("hwtest: no LED %q: %w", name, hw.ErrNotFound)
	}}
	for _, c := range order {
		sys.Chips = append(sys.Chips, c)
	}
	board, err := sys.Open(specs, periphhw.Options{})
	if err != nil {
		t.Fatalf("hwtest.NewBoard: %v", err)
	}
	b.Board = board
	t.Cleanup(func() { _ = board.Close() })
	return b
}

func (b *Board) record(spec hw.OutputSpec, w Write) {
	b.mu.Lock()
	b.history = append(b.history, Transition{
		Seq: len(b.history) + 1, Time: w.Time, Output: spec.Name,
		On: bool(w.Level) != spec.ActiveLow, Level: w.Level,
	})
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// Pin returns the fake behind an output, to check its level or make it fail (FailNext).
func (b *Board) Pin(output string) *Pin { return b.pins[output] }

// FailNext makes the next n writes to output fail with err (nil: EBUSY, a *hw.TransientError).
func (b *Board) FailNext(output string, n int, err error) { b.pins[output].FailNext(n, err) }

// Transitions returns every write so far, oldest first, across outputs.
func (b *Board) Transitions() []Transition {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Transition(nil), b.history...)
}

// History returns the writes to one output, oldest first.
func (b *Board) History(output string) []Transition {
	var h []Transition
	for _, tr := range b.Transitions() {
		if tr.Output == output {
			h = append(h, tr)
		}
	}
	return h
}

// WaitFor waits until cond holds for the transitions so far and returns them, or fails the test
// after timeout with what it saw. cond is called again after every write.
func (b *Board) WaitFor(t testing.TB, timeout time.Duration, cond func([]Transition) bool) []Transition {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		h := append([]Transition(nil), b.history...)
		ch := b.changed
		b.mu.Unlock()
		if cond(h) {
			return h
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("hwtest: condition not met after %v; transitions: %v", timeout, h)
			return nil
		}
	}
}

// WaitHistory waits until output has at least n writes and returns its history.
func (b *Board) WaitHistory(t testing.TB, output string, n int, timeout time.Duration) []Transition {
	t.Helper()
	b.WaitFor(t, timeout, func(all []Transition) bool {
		c := 0
		for _, tr := range all {
			if tr.Output == output {
				c++
			}
		}
		return c >= n
	})
	return b.History(output)
}

func (tr Transition) String() string {
	return fmt.Sprintf("#%d %s %s=%s", tr.Seq, tr.Time.Format("15:04:05.000000"), tr.Output, map[bool]string{true: "on", false: "off"}[tr.On])
}
