package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends state lines to systemd. The zero value (no socket) discards them.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET ("@name" is an abstract socket).
func FromEnv() *Notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return &Notifier{}
	}
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// Enabled reports whether a systemd socket is present.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Notify sends one or more newline-separated assignments, e.g. "READY=1\nSTATUS=connected".
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.addr.Name, err)
	}
	return nil
}

// Ready tells systemd start-up is done, with a status line.
func (n *Notifier) Ready(status string) error { return n.Notify("READY=1\nSTATUS=" + status) }

// Status updates the unit's STATUS text.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + status) }

// Stopping tells systemd a graceful stop began.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Watchdog feeds the watchdog once.
func (n *Notifier) Watchdog() error { return n.Notify("WATCHDOG=1") }

// WatchdogInterval returns half of $WATCHDOG_USEC (how often to ping) when the watchdog is armed for
// this process, else 0.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
