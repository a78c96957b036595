package periphhw_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"periph.io/x/conn/v3/gpio"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/hwtest"
	"github.com/c2d-project/c2d/hw/periphhw"
)

func levels(p *hwtest.Pin) []gpio.Level {
	var l []gpio.Level
	for _, w := range p.Writes() {
		l = append(l, w.Level)
	}
	return l
}

func equalLevels(a, b []gpio.Level) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Safe state at Open and Close, active-low mapping on every write, no read-back, lines released.
func TestSafeStateActiveLowNoReadBack(t *testing.T) {
	chip := hwtest.Pi5Chip()
	specs := []hw.OutputSpec{
		{Name: "relay", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1, ActiveLow: true, Safe: false},
		{Name: "lamp", Kind: hw.KindGPIO, Pin: "GPIO27", Line: -1, Safe: true},
		{Name: "fan", Kind: hw.KindGPIO, Chip: "pinctrl-rp1", Line: 5, ActiveLow: true, Safe: true},
		{Name: "pump", Kind: hw.KindGPIO, Pin: "GPIO6", Line: -1},
	}
	relay, lamp, fan, pump := chip.Pins[17], chip.Pins[27], chip.Pins[5], chip.Pins[6]
	// The fake hardware starts at the opposite of every safe level, so a missing drive shows.
	relay.L, lamp.L, fan.L, pump.L = gpio.Low, gpio.Low, gpio.High, gpio.High

	b, err := periphhw.System{Chips: []periphhw.Chip{chip}}.Open(specs, periphhw.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[*hwtest.Pin][]gpio.Level{relay: {gpio.High}, lamp: {gpio.High}, fan: {gpio.Low}, pump: {gpio.Low}}
	for p, w := range want {
		if got := levels(p); !equalLevels(got, w) {
			t.Errorf("%s after Open: writes %v, want %v", p.N, got, w)
		}
	}
	for _, s := range specs {
		if got := b.Output(s.Name).State(); got != s.Safe {
			t.Errorf("%s: State() = %v after Open, want safe %v", s.Name, got, s.Safe)
		}
	}
	if err := b.Healthy(); err != nil {
		t.Fatalf("Healthy after Open: %v", err)
	}

	steps := []struct {
		out   string
		on    bool
		pin   *hwtest.Pin
		level gpio.Level
	}{
		{"relay", true, relay, gpio.Low}, {"relay", false, relay, gpio.High},
		{"lamp", false, lamp, gpio.Low}, {"fan", false, fan, gpio.High}, {"pump", true, pump, gpio.High},
		{"relay", true, relay, gpio.Low},
	}
	for _, s := range steps {
		if err := b.Output(s.out).Set(s.on); err != nil {
			t.Fatal(err)
		}
		if s.pin.Level() != s.level {
			t.Errorf("%s.Set(%v): line level %v, want %v", s.out, s.on, s.pin.Level(), s.level)
		}
		if b.Output(s.out).State() != s.on {
			t.Errorf("%s.State() = %v, want %v", s.out, !s.on, s.on)
		}
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	safe := map[*hwtest.Pin]gpio.Level{relay: gpio.High, lamp: gpio.High, fan: gpio.Low, pump: gpio.Low}
	for p, l := range safe {
		if p.Level() != l {
			t.Errorf("%s after Close: level %v, want safe %v", p.N, p.Level(), l)
		}
		if !p.Released() {
			t.Errorf("%s not released by Close", p.N)
		}
		if p.Reads() != 0 {
			t.Errorf("%s was read back %d times", p.N, p.Reads())
		}
	}
	if err := b.Output("relay").Set(true); !errors.Is(err, hw.ErrClosed) {
		t.Errorf("Set after Close: %v, want hw.ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if names := strings.Join(b.Names(), ","); names != "relay,lamp,fan,pump" {
		t.Errorf("Names() = %s", names)
	}
	if b.Output("nope") != nil {
		t.Error("Output of an undeclared name is not nil")
	}
}

// Nothing moves unless every output resolves.
func TestOpenMovesNothingOnResolveError(t *testing.T) {
	chip := hwtest.Pi5Chip()
	_, err := periphhw.System{Chips: []periphhw.Chip{chip}}.Open([]hw.OutputSpec{
		pinSpec("ok", "GPIO2"), pinSpec("bad", "GPIO99"),
	}, periphhw.Options{})
	if !errors.Is(err, hw.ErrNotFound) || !strings.HasPrefix(err.Error(), `bad.pin: no line "GPIO99"`) {
		t.Fatalf("err = %v", err)
	}
	if w := chip.Pins[2].Writes(); len(w) != 0 {
		t.Fatalf("GPIO2 was written %v although Open failed resolving", w)
	}
}

// A failure to drive the safe state at Open names the output and releases what was requested.
func TestOpenDriveFailure(t *testing.T) {
	chip := hwtest.Pi5Chip()
	chip.Pins[3].FailNext(1, errors.New("line_request ioctl: device or resource busy"))
	chip.Pins[3].Holder = "gpioset@4242"
	_, err := periphhw.System{Chips: []periphhw.Chip{chip}}.Open([]hw.OutputSpec{pinSpec("a", "GPIO2"), pinSpec("b", "GPIO3")}, periphhw.Options{})
	var te *hw.TransientError
	want := `b: drive to safe state (off): transient hardware error: line_request ioctl: device or resource busy (line in use by "gpioset@4242")`
	if err == nil || err.Error() != want || !errors.As(err, &te) {
		t.Fatalf("err = %v, want b's busy line as a transient error", err)
	}
	if !chip.Pins[2].Released() || !chip.Pins[3].Released() {
		t.Error("lines not released after a failed Open")
	}
}

func TestErrorsAndHealth(t *testing.T) {
	chip := hwtest.Pi5Chip()
	b, err := periphhw.System{Chips: []periphhw.Chip{chip}}.Open([]hw.OutputSpec{pinSpec("r", "GPIO4")}, periphhw.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, pin := b.Output("r"), chip.Pins[4]

	transient := []error{
		syscall.EBUSY, syscall.EAGAIN, syscall.ENODEV,
		errors.New("device or resource busy"), // periph flattens errnos into text
		errors.New("GPIOLine.Out(): line_request ioctl: resource temporarily unavailable"),
	}
	for _, e := range transient {
		pin.FailNext(1, e)
		err := out.Set(true)
		var te *hw.TransientError
		if !errors.As(err, &te) {
			t.Errorf("Set failing with %q: %v is not a *hw.TransientError", e, err)
		}
		if out.State() {
			t.Errorf("State() changed although Set failed with %v", e)
		}
		if err := out.Set(false); err != nil { // succeeds: the failure was one-off
			t.Fatal(err)
		}
	}
	if err := b.Healthy(); err != nil {
		t.Fatalf("Healthy after recovered transient errors: %v", err)
	}

	pin.FailNext(3, syscall.EBUSY)
	for i := 0; i < 3; i++ {
		if b.Healthy() != nil {
			t.Fatalf("unhealthy after %d transient failures", i)
		}
		_ = out.Set(true)
	}
	if err := b.Healthy(); err == nil || !strings.Contains(err.Error(), "last 3 write(s) failed") {
		t.Fatalf("Healthy after 3 transient failures in a row: %v", err)
	}
	if err := out.Set(true); err != nil || b.Healthy() != nil {
		t.Fatalf("after a good write: Set %v, Healthy %v", err, b.Healthy())
	}

	pin.FailNext(1, errors.New("invalid argument"))
	err = out.Set(false)
	var te *hw.TransientError
	if err == nil || errors.As(err, &te) {
		t.Fatalf("Set failing with EINVAL: %v, want a non-transient error", err)
	}
	if !strings.HasPrefix(err.Error(), "r (gpio GPIO4): set off: ") {
		t.Errorf("error does not name the output: %v", err)
	}
	if b.Healthy() == nil {
		t.Fatal("healthy after a non-transient write failure")
	}
	if pin.Reads() != 0 {
		t.Errorf("read back %d times", pin.Reads())
	}
}

func TestHealthyWhenHardwareGone(t *testing.T) {
	gone := false
	sys := periphhw.System{Chips: pi5(), Alive: func(r periphhw.Resolution) error {
		if gone && r.Chip == "gpiochip0" {
			return os.ErrNotExist
		}
		return nil
	}}
	b, err := sys.Open([]hw.OutputSpec{pinSpec("r", "GPIO4")}, periphhw.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	gone = true
	if err := b.Healthy(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Healthy with the chip gone: %v", err)
	}
}

// makeLED creates what the kernel's LED class shows for one LED.
func makeLED(t *testing.T, root, name, max, trigger string) string {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"brightness": "7\n", "max_brightness": max + "\n", "trigger": trigger} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSysfsLEDs(t *testing.T) {
	root := t.TempDir()
	act := makeLED(t, root, "ACT", "1", "none [mmc0] timer heartbeat\n")
	pwr := makeLED(t, root, "PWR", "255", "none [default-on]\n")
	specs := []hw.OutputSpec{
		{Name: "act", Kind: hw.KindLED, LED: "ACT"},
		{Name: "pwr", Kind: hw.KindLED, LED: "PWR", Safe: true},
	}
	res, err := periphhw.System{}.Resolve(specs, periphhw.Options{LEDRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Path != act || res[0].String() != "act: led ACT ("+act+"), safe off" {
		t.Errorf("resolution %q", res[0])
	}
	if got := readFile(t, filepath.Join(act, "brightness")); got != "7\n" {
		t.Fatalf("Resolve wrote brightness %q", got)
	}

	b, err := periphhw.System{}.Open(specs, periphhw.Options{LEDRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	check := func(dir, brightness string) {
		t.Helper()
		if got := readFile(t, filepath.Join(dir, "brightness")); got != brightness {
			t.Errorf("%s brightness %q, want %q", filepath.Base(dir), got, brightness)
		}
		if got := readFile(t, filepath.Join(dir, "trigger")); got != "none" {
			t.Errorf("%s trigger %q, want none", filepath.Base(dir), got)
		}
	}
	check(act, "0")
	check(pwr, "255")
	if err := b.Output("act").Set(true); err != nil {
		t.Fatal(err)
	}
	check(act, "1") // max_brightness, not 255
	if err := b.Output("pwr").Set(false); err != nil {
		t.Fatal(err)
	}
	check(pwr, "0")
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(act); err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(); err == nil || !strings.Contains(err.Error(), "act (led ACT): hardware gone") {
		t.Fatalf("Healthy with ACT gone: %v", err)
	}
	if err := b.Close(); err == nil {
		t.Error("Close driving a vanished LED reported no error")
	}
	check(pwr, "255")
}

func TestSysfsLEDMissing(t *testing.T) {
	root := t.TempDir()
	makeLED(t, root, "mmc0", "255", "")
	makeLED(t, root, "input0::capslock", "1", "")
	_, err := periphhw.System{}.Open([]hw.OutputSpec{{Name: "act", Kind: hw.KindLED, LED: "ACT"}}, periphhw.Options{LEDRoot: root})
	want := `act.led: no LED "ACT" under ` + root + ` (LEDs: input0::capslock, mmc0)`
	if err == nil || err.Error() != want || !errors.Is(err, hw.ErrNotFound) {
		t.Fatalf("err = %v, want %s", err, want)
	}
	_, err = periphhw.System{}.Open([]hw.OutputSpec{{Name: "x", Kind: hw.KindLED, LED: "../mmc0"}}, periphhw.Options{LEDRoot: root})
	if err == nil || !strings.HasPrefix(err.Error(), `x.led: invalid LED name "../mmc0"`) {
		t.Fatalf("err = %v", err)
	}
}

// Open, the real entry point, with LEDs only: periph's driver init runs (enumerating whatever
// /dev/gpiochip* this machine has, requesting no line) and LEDs come from a temporary root.
func TestOpenKernelLEDsOnly(t *testing.T) {
	root := t.TempDir()
	act := makeLED(t, root, "ACT", "255", "[mmc0]\n")
	b, err := periphhw.Open([]hw.OutputSpec{{Name: "act", Kind: hw.KindLED, LED: "ACT", Safe: true}}, periphhw.Options{LEDRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(act, "brightness")); got != "255" {
		t.Errorf("brightness %q after Open", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// An undeclared pin fails whether or not this machine has GPIO chips.
	_, err = periphhw.Resolve([]hw.OutputSpec{pinSpec("relay1", "NO_SUCH_LINE")}, periphhw.Options{LEDRoot: root})
	if !errors.Is(err, hw.ErrNotFound) {
		t.Fatalf("Resolve of an unknown pin: %v", err)
	}
}
