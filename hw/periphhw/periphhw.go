package periphhw

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3/gpioioctl"

	"github.com/c2d-project/c2d/hw"
)

// Options configure Open.
type Options struct {
	// LEDRoot is the LED class directory; empty means DefaultLEDRoot (/sys/class/leds).
	LEDRoot string
	// Logger receives one line per resolved output at Open; nil discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.LEDRoot == "" {
		o.LEDRoot = DefaultLEDRoot
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Open opens the real hardware: the GPIO character device through periph's gpioioctl and LEDs
// under opts.LEDRoot. Every output is in its safe state when Open returns. Errors about one output
// are *hw.OutputError; unknown pins, chips and LEDs wrap hw.ErrNotFound.
//
// periph enumerates GPIO chips once per process, at the first Open or Resolve: chips created
// later (hot-plugged, or gpio-sim chips in a test VM) are not seen.
func Open(specs []hw.OutputSpec, opts Options) (hw.Board, error) {
	sys, err := Kernel(specs)
	for _, l := range initLog {
		opts.withDefaults().Logger.Debug("periph: "+l, "component", "periph")
	}
	if err != nil {
		return nil, err
	}
	b, err := sys.Open(specs, opts)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Resolve resolves specs against the real hardware without requesting or moving any line.
func Resolve(specs []hw.OutputSpec, opts Options) ([]Resolution, error) {
	sys, err := Kernel(specs)
	if err != nil {
		return nil, err
	}
	return sys.Resolve(specs, opts)
}

var (
	initOnce sync.Once
	initErr  error
	initLog  []string // what periph printed with the standard log package during its init
)

// periphInit runs periph's driver init with the standard log package captured: gpioioctl
// log.Println()s every chip it cannot open ("opening gpio chip … failed"), which would land on
// stderr unformatted (and in every error-case test's output). The cause reaches the user through
// our own errors (noChips, diagnose); the lines are kept for Open's debug log.
func periphInit() ([]string, error) {
	var buf strings.Builder
	w, flags := log.Writer(), log.Flags()
	log.SetOutput(&buf)
	log.SetFlags(0)
	_, err := driverreg.Init()
	log.SetOutput(w)
	log.SetFlags(flags)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines, err
}

// Kernel initialises periph's gpioioctl driver (once per process) and returns the running
// kernel's GPIO chips as a System with sysfs LEDs. specs only decide whether a missing GPIO
// character device is an error.
func Kernel(specs []hw.OutputSpec) (System, error) {
	initOnce.Do(func() {
		// Only gpioioctl is linked in (see doc.go), so this loads nothing else: no bcm283x
		// register access, no legacy sysfs GPIO names in gpioreg.
		initLog, initErr = periphInit()
	})
	if initErr != nil {
		return System{}, fmt.Errorf("periph driver init: %w", initErr)
	}
	sys := System{Alive: alive, Diagnose: func() string { return diagnose(devGlob, openDev) }}
	if runtime.GOOS != "linux" {
		// gpioioctl fills Chips with a dummy chip elsewhere; there is no GPIO to drive.
		for _, s := range specs {
			if s.Kind == hw.KindGPIO {
				return System{}, fmt.Errorf("GPIO outputs need Linux's GPIO character device (this is %s): use the sim backend", runtime.GOOS)
			}
		}
		return sys, nil
	}
	for _, c := range gpioioctl.Chips {
		sys.Chips = append(sys.Chips, ioctlChip{c})
	}
	needGPIO := false
	for _, s := range specs {
		needGPIO = needGPIO || s.Kind == hw.KindGPIO
	}
	if needGPIO && len(sys.Chips) == 0 {
		return System{}, noChips(devGlob, openDev)
	}
	return sys, nil
}

const devGlob = "/dev/gpiochip*"

func openDev(path string) error {
	f, err := os.Open(path)
	if err == nil {
		f.Close()
	}
	return err
}

// noChips explains an empty chip list: none exist, or they exist but could not be opened (periph
// then skips its driver without an error).
func noChips(glob string, open func(string) error) error {
	paths, _ := filepath.Glob(glob)
	if len(paths) == 0 {
		return notFound(fmt.Sprintf("no GPIO chips: nothing matches %s (is this a Linux board with the GPIO character device?)", glob))
	}
	for _, p := range paths {
		err := open(p)
		if err == nil {
			continue
		}
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("cannot open %s: permission denied — is the user in the gpio group? (%w)", p, fs.ErrPermission)
		}
		return fmt.Errorf("cannot open %s: %w", p, err)
	}
	return fmt.Errorf("GPIO chips %s exist but periph's gpioioctl found none usable", strings.Join(paths, ", "))
}

// diagnose names device nodes that exist but cannot be opened: their lines are invisible to
// resolution, which would otherwise look like a plain unknown pin.
func diagnose(glob string, open func(string) error) string {
	paths, _ := filepath.Glob(glob)
	var bad []string
	for _, p := range paths {
		err := open(p)
		if err == nil {
			continue
		}
		msg := fmt.Sprintf("cannot open %s: %v", p, errors.Unwrap(err))
		if errors.Is(err, fs.ErrPermission) {
			msg += " — is the user in the gpio group?"
		}
		bad = append(bad, msg)
	}
	return strings.Join(bad, "; ")
}

// alive reports whether a resolved output's hardware still exists.
func alive(r Resolution) error {
	if r.Path == "" {
		return nil
	}
	_, err := os.Stat(r.Path)
	return err
}

// ioctlChip adapts periph's chip to Chip.
type ioctlChip struct{ c *gpioioctl.GPIOChip }

func (a ioctlChip) Name() string  { return a.c.Name() }
func (a ioctlChip) Label() string { return a.c.Label() }
func (a ioctlChip) Path() string  { return a.c.Path() }
func (a ioctlChip) NumLines() int { return len(a.c.Lines()) }

// LineName is the kernel's line name. periph renames a line whose name an earlier chip already
// registered to "<chip name>-<name>" (in place, in the order it sorted the chips); that prefix is
// removed so that resolution sees the same names whatever the chip order, and finds duplicates.
// Lines periph leaves unregistered ("-", "_") read as unnamed.
func (a ioctlChip) LineName(off int) string {
	n := strings.TrimPrefix(a.c.Lines()[off].Name(), a.c.Name()+"-")
	if n == "-" || n == "_" {
		return ""
	}
	return n
}

func (a ioctlChip) Line(off int) gpio.PinOut { return a.c.Lines()[off] }

// consumerOf names who held a line when periph enumerated it ("" if free), for busy errors.
func consumerOf(p gpio.PinOut) string {
	if c, ok := p.(interface{ Consumer() string }); ok {
		return c.Consumer()
	}
	return ""
}
