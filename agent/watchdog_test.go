package agent_test

import (
	"context"
	"errors"
	"github.com/c2d-project/c2d/internal/testproc"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/agent"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/internal/sdnotify"
)

// sickBoard is the sim board with a switch that makes Healthy fail (a backend that lost its chip).
type sickBoard struct {
	hw.Board
	mu  sync.Mutex
	err error
}

func (b *sickBoard) Healthy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	return b.Board.Healthy()
}

func (b *sickBoard) set(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
}

// The systemd watchdog is fed while the MQTT loop and the hardware are healthy, and starves while
// the hardware is not; STATUS says what the agent did.
func TestWatchdogAndStatus(t *testing.T) {
	srv, rec, addr := startMochi(t)
	b := newBoard(t, addr, "")
	sock, msgs := testproc.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000") // ping every 50ms
	t.Setenv("WATCHDOG_PID", "")
	board := &sickBoard{}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, b.cfg, agent.Options{
			Logger:   slog.New(slog.NewTextHandler(logs, nil)),
			Notifier: sdnotify.FromEnv(),
			OpenBoard: func(cfg *config.Config, log *slog.Logger) (hw.Board, error) {
				inner, err := agent.OpenBoard(cfg, log)
				board.Board = inner
				return board, err
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	waitReady(t, msgs)

	count := func(want string, n int) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for seen := 0; seen < n; {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					seen++
				}
			case <-timeout:
				t.Fatalf("saw fewer than %d %q", n, want)
			}
		}
	}
	count("WATCHDOG=1", 3)

	deliver(t, srv, message("ok", "", "target", "act", "action", "on"))
	deliver(t, srv, message("no", "", "target", "nope", "action", "on"))
	rec.wait(t, "both settled", func(evs []wireEvent) bool { return has("puback", "ok")(evs) && has("puback", "no")(evs) })
	count("1 completed, 1 rejected; last error: unknown target", 1)

	// Hardware sick: the pings stop. Markers sent into the same socket split the stream, so what
	// arrives between them was sent between them.
	board.set(errors.New("gpiochip0 vanished"))
	waitLog(t, logs, "hardware unhealthy", 1)
	marker(t, sock, "MARK=1")
	drainUntil(t, msgs, "MARK=1")
	waitLog(t, logs, "hardware unhealthy", 3)
	marker(t, sock, "MARK=2")
	for _, m := range drainUntil(t, msgs, "MARK=2") {
		if strings.Contains(m, "WATCHDOG=1") {
			t.Fatal("watchdog fed while the hardware was unhealthy")
		}
	}
	board.set(nil)
	count("WATCHDOG=1", 2)
}

func waitLog(t *testing.T, logs *syncBuffer, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log never had %d × %q", n, s)
		}
		time.Sleep(5 * time.Millisecond) // polling the log, with a deadline
	}
}

func marker(t *testing.T, sock, m string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	must(t, err)
	defer c.Close()
	_, err = c.Write([]byte(m))
	must(t, err)
}

func drainUntil(t *testing.T, msgs <-chan string, m string) []string {
	t.Helper()
	var seen []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-msgs:
			if got == m {
				return seen
			}
			seen = append(seen, got)
		case <-timeout:
			t.Fatalf("marker %q never arrived", m)
		}
	}
}
