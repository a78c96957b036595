package vmsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Roots of the kernel interfaces; variables so a reader sees every path the package touches.
var (
	ConfigfsRoot = "/sys/kernel/config/gpio-sim"
	PlatformRoot = "/sys/devices/platform"
	GPIOClass    = "/sys/class/gpio"
	DevRoot      = "/dev"
)

// Chip is one live gpio-sim device with a single bank.
type Chip struct {
	Label    string // the chip label, e.g. "pinctrl-rp1"
	Lines    int
	DevName  string // platform device, e.g. "gpio-sim.0"
	ChipName string // e.g. "gpiochip1"
	Base     int    // global GPIO number of line 0, as trace events report lines

	dir   string   // configfs directory of the device
	named []string // line directories created
}

// NewChip creates and activates a simulated chip called name (its configfs directory) with the
// given label and len(lineNames) lines; an empty name leaves that line unnamed.
func NewChip(name, label string, lineNames []string) (*Chip, error) {
	c := &Chip{Label: label, Lines: len(lineNames), dir: filepath.Join(ConfigfsRoot, name)}
	if err := c.create(lineNames); err != nil {
		_ = c.Remove()
		return nil, fmt.Errorf("gpio-sim chip %s (%s): %w", name, label, err)
	}
	return c, nil
}

func (c *Chip) create(lineNames []string) error {
	if _, err := os.Stat(ConfigfsRoot); err != nil {
		return fmt.Errorf("gpio-sim configfs (module loaded, configfs mounted?): %w", err)
	}
	bank := filepath.Join(c.dir, "bank0")
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(bank, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(bank, "label"), c.Label); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(bank, "num_lines"), strconv.Itoa(len(lineNames))); err != nil {
		return err
	}
	for i, n := range lineNames {
		if n == "" {
			continue
		}
		d := filepath.Join(bank, "line"+strconv.Itoa(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		c.named = append(c.named, d)
		if err := writeFile(filepath.Join(d, "name"), n); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(c.dir, "live"), "1"); err != nil {
		return err
	}
	var err error
	if c.DevName, err = readFile(filepath.Join(c.dir, "dev_name")); err != nil {
		return err
	}
	if c.ChipName, err = readFile(filepath.Join(bank, "chip_name")); err != nil {
		return err
	}
	if c.Base, err = gpioBase(c.DevName, c.Label); err != nil {
		return err
	}
	// devtmpfs adds the node as the device registers; wait for it rather than assume.
	return waitFor(2*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(DevRoot, c.ChipName))
		return err == nil
	}, "device node "+filepath.Join(DevRoot, c.ChipName))
}

// gpioBase finds the legacy sysfs entry of the chip (/sys/class/gpio/gpiochip<base>, whose device
// link names the chip's parent, the gpio-sim platform device, and whose label is the bank's) and
// returns its base.
func gpioBase(devName, label string) (int, error) {
	entries, err := filepath.Glob(filepath.Join(GPIOClass, "gpiochip*"))
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		dev, err := os.Readlink(filepath.Join(e, "device"))
		if err != nil || filepath.Base(dev) != devName {
			continue
		}
		if l, _ := readFile(filepath.Join(e, "label")); l != label {
			continue
		}
		s, err := readFile(filepath.Join(e, "base"))
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(s)
	}
	return 0, fmt.Errorf("no %s/gpiochip* entry for %s %q (CONFIG_GPIO_SYSFS?)", GPIOClass, devName, label)
}

// Path is the directory of the chip's device, where the driver publishes each line's state.
func (c *Chip) Path() string { return filepath.Join(PlatformRoot, c.DevName, c.ChipName) }

// Dev is the chip's character device, e.g. /dev/gpiochip1.
func (c *Chip) Dev() string { return filepath.Join(DevRoot, c.ChipName) }

// Value is the kernel's view of line offset: what a consumer drives on it, or its pull when no
// consumer drives it (gpio-sim reverts a released line to its pull).
func (c *Chip) Value(offset int) (int, error) {
	s, err := readFile(filepath.Join(c.Path(), fmt.Sprintf("sim_gpio%d", offset), "value"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// SetPull sets the simulated pull of line offset (what the line reads when nothing drives it).
func (c *Chip) SetPull(offset int, up bool) error {
	v := "pull-down"
	if up {
		v = "pull-up"
	}
	return writeFile(filepath.Join(c.Path(), fmt.Sprintf("sim_gpio%d", offset), "pull"), v)
}

// WaitValue polls the kernel's view of line offset until it reads want or timeout passes.
func (c *Chip) WaitValue(offset, want int, timeout time.Duration) error {
	var last int
	var lastErr error
	err := waitFor(timeout, func() bool {
		last, lastErr = c.Value(offset)
		return lastErr == nil && last == want
	}, fmt.Sprintf("%s line %d = %d", c.Label, offset, want))
	if err != nil && lastErr != nil {
		return fmt.Errorf("%w (last read: %v)", err, lastErr)
	}
	if err != nil {
		return fmt.Errorf("%w (still %d)", err, last)
	}
	return nil
}

// Remove deactivates the chip and deletes its configfs tree. Safe on a partly created chip.
func (c *Chip) Remove() error {
	if c == nil || c.dir == "" {
		return nil
	}
	var errs []error
	if _, err := os.Stat(filepath.Join(c.dir, "live")); err == nil {
		if v, _ := readFile(filepath.Join(c.dir, "live")); v == "1" {
			if err := writeFile(filepath.Join(c.dir, "live"), "0"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := len(c.named) - 1; i >= 0; i-- {
		errs = append(errs, rmdir(c.named[i]))
	}
	errs = append(errs, rmdir(filepath.Join(c.dir, "bank0")), rmdir(c.dir))
	c.dir = ""
	return errors.Join(errs...)
}

func rmdir(d string) error {
	if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func writeFile(p, v string) error {
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", v, p, err)
	}
	return nil
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// waitFor polls cond every millisecond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool, what string) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
	return nil
}
