package periphhw

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"

	"periph.io/x/conn/v3/gpio"

	"github.com/c2d-project/c2d/hw"
)

// System is the hardware a board is opened on: GPIO chips in resolution order (pinctrl-* first,
// as periph's gpioioctl sorts them) and a way to find LEDs. Open builds it from the running kernel;
// tests build it from fakes (hwtest).
type System struct {
	Chips []Chip
	// LED returns the LED to drive; its error wraps hw.ErrNotFound when there is no such LED.
	// Nil means sysfs LEDs under Options.LEDRoot.
	LED func(name string) (gpio.PinOut, error)
	// Alive, if set, reports whether the hardware behind a resolved output still exists (the
	// chip's device node, the LED's directory); Healthy calls it.
	Alive func(r Resolution) error
	// Diagnose, if set, explains why a pin did not resolve beyond what Chips show (for example a
	// /dev/gpiochip* that could not be opened); it is appended to not-found errors.
	Diagnose func() string
}

// persistentAfter is how many transient failures in a row make an output unhealthy.
const persistentAfter = 3

// Board is an opened set of outputs. It implements hw.Board.
type Board struct {
	outs   []*output
	byName map[string]*output
	alive  func(Resolution) error
	log    *slog.Logger

	mu     sync.Mutex
	closed bool
}

type output struct {
	spec hw.OutputSpec
	res  Resolution
	pin  gpio.PinOut

	mu       sync.Mutex
	on       bool
	closed   bool
	lastErr  error // last failed write; nil after a success
	failures int   // consecutive failed writes
	fatal    bool  // lastErr is not transient
}

var _ hw.Board = (*Board)(nil)

// Resolve resolves every spec on sys without moving or requesting any line, for
// `check-config`. The first failure is returned as a *hw.OutputError.
func (sys System) Resolve(specs []hw.OutputSpec, opts Options) ([]Resolution, error) {
	opts = opts.withDefaults()
	if sys.LED == nil {
		sys.LED = sysfsLEDFinder(opts.LEDRoot)
	}
	res, _, err := sys.resolve(specs, opts)
	return res, err
}

// resolve finds every output's line or LED; looking them up has no side effect on the hardware.
func (sys System) resolve(specs []hw.OutputSpec, opts Options) ([]Resolution, []gpio.PinOut, error) {
	var (
		res   []Resolution
		pins  []gpio.PinOut
		names = map[string]bool{}
		used  = map[string]string{} // chip name + offset, or led name → output
	)
	for _, spec := range specs {
		if spec.Name == "" {
			return nil, nil, outErr(spec, "name", errors.New("empty output name"))
		}
		if names[spec.Name] {
			return nil, nil, outErr(spec, "name", fmt.Errorf("output %q declared twice", spec.Name))
		}
		names[spec.Name] = true
		r := Resolution{Output: spec.Name, Kind: spec.Kind, ActiveLow: spec.ActiveLow, Safe: spec.Safe, Line: -1}
		var key, field string
		var pin gpio.PinOut
		switch spec.Kind {
		case hw.KindGPIO:
			c, off, err := resolveGPIO(spec, sys.Chips)
			if err != nil {
				if sys.Diagnose != nil && errors.Is(err, hw.ErrNotFound) {
					if d := sys.Diagnose(); d != "" {
						var oe *hw.OutputError
						if errors.As(err, &oe) {
							oe.Err = notFound(oe.Err.Error() + "; " + d)
						}
					}
				}
				return nil, nil, err
			}
			r.Chip, r.ChipLabel, r.Line, r.LineName = c.Name(), c.Label(), off, c.LineName(off)
			if p, ok := c.(interface{ Path() string }); ok {
				r.Path = p.Path()
			}
			key, field = fmt.Sprintf("gpio %s %d", c.Name(), off), "pin"
			if spec.Pin == "" {
				field = "line"
			}
			pin = c.Line(off)
		case hw.KindLED:
			if spec.LED == "" {
				return nil, nil, outErr(spec, "led", errors.New("no LED name given"))
			}
			r.LED = spec.LED
			r.Path = strings.TrimSuffix(opts.LEDRoot, "/") + "/" + spec.LED
			key, field = "led "+spec.LED, "led"
			p, err := sys.LED(spec.LED)
			if err != nil {
				return nil, nil, outErr(spec, "led", err)
			}
			pin = p
		default:
			return nil, nil, outErr(spec, "kind", fmt.Errorf("unknown kind %q (want %q or %q)", spec.Kind, hw.KindGPIO, hw.KindLED))
		}
		if other, dup := used[key]; dup {
			what := fmt.Sprintf("%s (%s) line %d", r.ChipLabel, r.Chip, r.Line)
			if spec.Kind == hw.KindLED {
				what = "LED " + spec.LED
			}
			return nil, nil, outErr(spec, field, fmt.Errorf("%s is already used by output %q", what, other))
		}
		used[key] = spec.Name
		res = append(res, r)
		pins = append(pins, pin)
	}
	return res, pins, nil
}

// Open resolves every spec on sys, then drives every output to its safe state before returning.
// Nothing moves unless every spec resolved. If driving fails, the lines already requested are
// released and the error names the output.
func (sys System) Open(specs []hw.OutputSpec, opts Options) (*Board, error) {
	opts = opts.withDefaults()
	sysfsLEDs := sys.LED == nil
	if sysfsLEDs {
		sys.LED = sysfsLEDFinder(opts.LEDRoot)
	}
	res, pins, err := sys.resolve(specs, opts)
	if err != nil {
		return nil, err
	}
	b := &Board{byName: map[string]*output{}, alive: sys.Alive, log: opts.Logger}
	if b.alive == nil && sysfsLEDs {
		b.alive = func(r Resolution) error {
			if r.Kind != hw.KindLED {
				return nil
			}
			_, err := os.Stat(r.Path)
			return err
		}
	}
	for i, spec := range specs {
		o := &output{spec: spec, res: res[i], pin: pins[i]}
		b.outs = append(b.outs, o)
		b.byName[spec.Name] = o
	}
	for _, o := range b.outs {
		if err := o.drive(o.spec.Safe); err != nil {
			b.release()
			if c := consumerOf(o.pin); c != "" {
				err = fmt.Errorf("%w (line in use by %q)", err, c)
			}
			return nil, outErr(o.spec, "", fmt.Errorf("drive to safe state (%s): %w", onOff(o.spec.Safe), err))
		}
		b.log.Info("output ready", "output", o.spec.Name, "resolved", o.res.String())
	}
	return b, nil
}

// Output implements hw.Board.
func (b *Board) Output(name string) hw.Output {
	o, ok := b.byName[name]
	if !ok {
		return nil
	}
	return o
}

// Names implements hw.Board.
func (b *Board) Names() []string {
	names := make([]string, len(b.outs))
	for i, o := range b.outs {
		names[i] = o.spec.Name
	}
	return names
}

// Resolutions says what each output resolved to, in config order.
func (b *Board) Resolutions() []Resolution {
	res := make([]Resolution, len(b.outs))
	for i, o := range b.outs {
		res[i] = o.res
	}
	return res
}

// Healthy implements hw.Board: an error when an output's hardware vanished, its last write failed
// with a non-transient error, or transient failures kept repeating.
func (b *Board) Healthy() error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return hw.ErrClosed
	}
	var errs []error
	for _, o := range b.outs {
		if b.alive != nil {
			if err := b.alive(o.res); err != nil {
				errs = append(errs, fmt.Errorf("%s: hardware gone: %w", o.spec, err))
				continue
			}
		}
		o.mu.Lock()
		if o.lastErr != nil && (o.fatal || o.failures >= persistentAfter) {
			errs = append(errs, fmt.Errorf("%s: last %d write(s) failed: %w", o.spec, o.failures, o.lastErr))
		}
		o.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Close implements hw.Board: every output goes to its safe state, then the lines are released. It
// tries every output and returns every failure.
func (b *Board) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	var errs []error
	for _, o := range b.outs {
		o.mu.Lock()
		if err := o.driveLocked(o.spec.Safe); err != nil {
			errs = append(errs, fmt.Errorf("%s: drive to safe state: %w", o.spec, err))
		}
		o.closed = true
		o.mu.Unlock()
	}
	b.release()
	return errors.Join(errs...)
}

func (b *Board) release() {
	for _, o := range b.outs {
		switch c := o.pin.(type) {
		case interface{ Close() }:
			c.Close()
		case io.Closer:
			_ = c.Close()
		}
	}
}

// Name implements hw.Output.
func (o *output) Name() string { return o.spec.Name }

// State implements hw.Output: the last state successfully commanded, never read back.
func (o *output) State() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.on
}

// Set implements hw.Output.
func (o *output) Set(on bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return fmt.Errorf("%s: %w", o.spec.Name, hw.ErrClosed)
	}
	if err := o.driveLocked(on); err != nil {
		return fmt.Errorf("%s: set %s: %w", o.spec, onOff(on), err)
	}
	return nil
}

func (o *output) drive(on bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.driveLocked(on)
}

func (o *output) driveLocked(on bool) error {
	err := o.pin.Out(gpio.Level(on != o.spec.ActiveLow))
	if err != nil {
		err = classify(err)
		o.lastErr, o.failures = err, o.failures+1
		var te *hw.TransientError
		o.fatal = !errors.As(err, &te)
		return err
	}
	o.on, o.lastErr, o.failures, o.fatal = on, nil, 0, false
	return nil
}

// transientErrnos are worth retrying: the line or chip is busy, the call was interrupted, or the
// device went away (a driver reload; Healthy reports it meanwhile so the watchdog can restart us).
var transientErrnos = []syscall.Errno{syscall.EBUSY, syscall.EAGAIN, syscall.EINTR, syscall.ETIMEDOUT, syscall.ENODEV, syscall.ENXIO}

// classify wraps retryable failures in *hw.TransientError. periph's gpioioctl turns errnos into
// plain errors.New(errno.Error()), so the errno text is matched as well as the value.
func classify(err error) error {
	var te *hw.TransientError
	if errors.As(err, &te) {
		return err
	}
	msg := err.Error()
	for _, e := range transientErrnos {
		if errors.Is(err, e) || strings.Contains(msg, e.Error()) {
			return &hw.TransientError{Err: err}
		}
	}
	return err
}
