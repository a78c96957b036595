package periphhw

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// DefaultLEDRoot is where the kernel's LED class lives.
const DefaultLEDRoot = "/sys/class/leds"

// sysfsLED drives /sys/class/leds/<name> by writing brightness. We do not use periph's sysfs.LED:
// its root is fixed at /sys/class/leds and enumerated once at init (so it cannot be tested
// against a temporary directory), it has no trigger API (a kernel trigger such as the ACT LED's
// mmc0 would keep overriding us), and it writes 255 rather than max_brightness.
type sysfsLED struct {
	name, dir string
	on        []byte // max_brightness as text

	mu        sync.Mutex
	triggered bool // the kernel trigger was cleared
}

var _ gpio.PinOut = (*sysfsLED)(nil)

func ledMissing(root, name string) error {
	var have []string
	if entries, err := os.ReadDir(root); err == nil {
		for _, e := range entries {
			have = append(have, e.Name())
		}
	}
	sort.Strings(have)
	list := strings.Join(have, ", ")
	if len(have) == 0 {
		list = "none"
	}
	return notFound(fmt.Sprintf("no LED %q under %s (LEDs: %s)", name, root, list))
}

// sysfsLEDFinder looks LEDs up under root. Looking up reads max_brightness and changes nothing.
func sysfsLEDFinder(root string) func(string) (gpio.PinOut, error) {
	return func(name string) (gpio.PinOut, error) {
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return nil, fmt.Errorf("invalid LED name %q", name)
		}
		dir := filepath.Join(root, name)
		if _, err := os.Stat(filepath.Join(dir, "brightness")); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, ledMissing(root, name)
			}
			return nil, fmt.Errorf("LED %s: %w", name, err)
		}
		max := 255
		if b, err := os.ReadFile(filepath.Join(dir, "max_brightness")); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
				max = n
			}
		}
		return &sysfsLED{name: name, dir: dir, on: []byte(strconv.Itoa(max))}, nil
	}
}

func (l *sysfsLED) String() string   { return "led " + l.name }
func (l *sysfsLED) Name() string     { return l.name }
func (l *sysfsLED) Number() int      { return -1 }
func (l *sysfsLED) Function() string { return "LED" }
func (l *sysfsLED) Halt() error      { return nil }

// PWM is not offered: outputs are on/off.
func (l *sysfsLED) PWM(gpio.Duty, physic.Frequency) error {
	return errors.New("sysfs LED: PWM not supported")
}

// Out writes max_brightness or 0. Before the first write it sets the trigger to "none" so that
// a kernel trigger (heartbeat, mmc0, timer) stops driving the LED; when trigger is not writable it
// writes 0 first, which the kernel documents as also removing the trigger.
func (l *sysfsLED) Out(level gpio.Level) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.triggered {
		if err := writeAttr(filepath.Join(l.dir, "trigger"), []byte("none")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			if err := writeAttr(filepath.Join(l.dir, "brightness"), []byte("0")); err != nil {
				return err
			}
		}
		l.triggered = true
	}
	v := []byte("0")
	if level {
		v = l.on
	}
	return writeAttr(filepath.Join(l.dir, "brightness"), v)
}

// writeAttr writes a sysfs attribute in one write(2), as `echo v > file` does. O_TRUNC is ignored
// by sysfs and keeps a regular file (tests) holding exactly the last value.
func writeAttr(path string, v []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("%w — LED files are root-only unless a udev rule grants a group", err)
		}
		return err
	}
	_, err = f.Write(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
