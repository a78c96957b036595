package vmsim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// ULEDSDev is the uleds control device.
var ULEDSDev = "/dev/uleds"

// LEDEvent is one brightness the LED core set on a uleds LED, stamped when the test read it.
type LEDEvent struct {
	At         time.Time
	Brightness int32
}

// LED is a userspace LED: /sys/class/leds/<Name> exists while it is open. The kernel keeps only
// the latest brightness for the reader, so changes closer together than the reader can keep up
// with coalesce; the reader goroutine blocks in read and stamps each value as it arrives.
type LED struct {
	Name string

	f      *os.File
	events chan LEDEvent
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// NewLED registers a uleds LED called name with the given max_brightness.
func NewLED(name string, maxBrightness int32) (*LED, error) {
	if len(name) >= 64 {
		return nil, fmt.Errorf("uleds: name %q longer than 63 bytes", name)
	}
	f, err := os.OpenFile(ULEDSDev, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("uleds (module loaded?): %w", err)
	}
	// struct uleds_user_dev { char name[64]; int max_brightness; }
	var req [68]byte
	copy(req[:64], name)
	binary.NativeEndian.PutUint32(req[64:], uint32(maxBrightness))
	if _, err := f.Write(req[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("uleds: register %q: %w", name, err)
	}
	// Registration leaves the initial brightness (0) pending for the reader; take it now so the
	// events channel carries only changes made after NewLED returned.
	var initial [4]byte
	if _, err := io.ReadFull(f, initial[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("uleds: read initial brightness of %q: %w", name, err)
	}
	l := &LED{Name: name, f: f, events: make(chan LEDEvent, 4096), done: make(chan struct{})}
	go l.read()
	return l, nil
}

func (l *LED) read() {
	defer close(l.done)
	defer close(l.events)
	var b [4]byte
	for {
		if _, err := io.ReadFull(l.f, b[:]); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
			}
			return
		}
		l.events <- LEDEvent{At: time.Now(), Brightness: int32(binary.NativeEndian.Uint32(b[:]))}
	}
}

// Next returns the next brightness change, or an error after timeout.
func (l *LED) Next(timeout time.Duration) (LEDEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ev, ok := <-l.events:
		if !ok {
			l.mu.Lock()
			defer l.mu.Unlock()
			return LEDEvent{}, fmt.Errorf("led %s: reader stopped: %v", l.Name, l.err)
		}
		return ev, nil
	case <-t.C:
		return LEDEvent{}, fmt.Errorf("led %s: no brightness change within %v", l.Name, timeout)
	}
}

// Drain returns the changes already read, without waiting.
func (l *LED) Drain() []LEDEvent {
	var out []LEDEvent
	for {
		select {
		case ev, ok := <-l.events:
			if !ok {
				return out
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

// Brightness reads the LED core's current brightness from sysfs.
func (l *LED) Brightness() (int, error) {
	s, err := readFile("/sys/class/leds/" + l.Name + "/brightness")
	if err != nil {
		return 0, err
	}
	var v int
	_, err = fmt.Sscan(s, &v)
	return v, err
}

// Close unregisters the LED.
func (l *LED) Close() error {
	err := l.f.Close()
	<-l.done
	return err
}
