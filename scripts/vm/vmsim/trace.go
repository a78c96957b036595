package vmsim

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// TraceRoot is where tracefs is mounted.
var TraceRoot = "/sys/kernel/tracing"

// GPIOEvent is one gpio_value or gpio_direction trace event: the kernel's own record, with its
// timestamp, of every value a consumer drove on a line (gpiolib emits it for each set, whatever
// the driver), so a transition too short to sample from sysfs is still seen.
type GPIOEvent struct {
	At   time.Duration // kernel trace clock
	GPIO int           // global GPIO number (Chip.Base + offset)
	Op   string        // "set" or "get" (gpio_value), "out" or "in" (gpio_direction)
	// Value is the physical level for set/get; for a direction event it is the error code.
	Value int
}

func (e GPIOEvent) String() string {
	return fmt.Sprintf("%.6f gpio %d %s %d", e.At.Seconds(), e.GPIO, e.Op, e.Value)
}

// Trace records the kernel's gpio trace events. Only one may be in use at a time (the trace
// buffer is global).
type Trace struct{}

// StartTrace enables the gpio trace events and empties the trace buffer.
func StartTrace() (*Trace, error) {
	for _, ev := range []string{"gpio_value", "gpio_direction"} {
		if err := writeFile(filepath.Join(TraceRoot, "events/gpio", ev, "enable"), "1"); err != nil {
			return nil, fmt.Errorf("enable trace event (tracefs mounted?): %w", err)
		}
	}
	t := &Trace{}
	return t, t.Reset()
}

// Reset empties the trace buffer.
func (t *Trace) Reset() error {
	f, err := os.OpenFile(filepath.Join(TraceRoot, "trace"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// Stop disables the events.
func (t *Trace) Stop() error {
	for _, ev := range []string{"gpio_value", "gpio_direction"} {
		if err := writeFile(filepath.Join(TraceRoot, "events/gpio", ev, "enable"), "0"); err != nil {
			return err
		}
	}
	return nil
}

// traceLine matches the trace's text lines, e.g.
//
//	c2d-agent-123 [000] ..... 12.345678: gpio_value: 512 set 1
//	c2d-agent-123 [000] ..... 12.345678: gpio_direction: 512 out (0)
var traceLine = regexp.MustCompile(`\s(\d+)\.(\d{6}): gpio_(value|direction): (\d+) +(set|get|out|in) \(?(-?\d+)\)?\s*$`)

// Events returns the events recorded since the last Reset for the GPIOs in [first, first+n).
func (t *Trace) Events(first, n int) ([]GPIOEvent, error) {
	f, err := os.Open(filepath.Join(TraceRoot, "trace"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []GPIOEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			if strings.Contains(line, "LOST") {
				return nil, fmt.Errorf("trace buffer overran: %s", line)
			}
			continue
		}
		m := traceLine.FindStringSubmatch(line)
		if m == nil {
			if strings.Contains(line, "gpio_") {
				return nil, fmt.Errorf("unparsed trace line %q", line)
			}
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		gpio, _ := strconv.Atoi(m[4])
		val, _ := strconv.Atoi(m[6])
		if gpio < first || gpio >= first+n {
			continue
		}
		out = append(out, GPIOEvent{
			At:    time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond,
			GPIO:  gpio,
			Op:    m[5],
			Value: val,
		})
	}
	return out, sc.Err()
}

// Levels returns the successive physical levels driven on one GPIO (set events and the value an
// output direction change drives), with their timestamps, dropping repeats of the same level.
func Levels(evs []GPIOEvent, gpio int) []GPIOEvent {
	var out []GPIOEvent
	for _, e := range evs {
		if e.GPIO != gpio || e.Op != "set" {
			continue
		}
		if len(out) > 0 && out[len(out)-1].Value == e.Value {
			continue
		}
		out = append(out, e)
	}
	return out
}
