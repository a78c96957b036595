package agent_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/c2d-project/c2d/agent"
	"github.com/c2d-project/c2d/internal/sdnotify"
	"github.com/c2d-project/c2d/internal/testproc"
)

// refuseAll is a broker that refuses every CONNECT, as a hub does a disabled device.
type refuseAll struct{ mqtt.HookBase }

func (*refuseAll) ID() string                                              { return "refuse-all" }
func (*refuseAll) Provides(b byte) bool                                    { return b == mqtt.OnConnectAuthenticate }
func (*refuseAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return false }

// A refused board says why on the technician's first screen: `systemctl status` shows STATUS=,
// which carries the likely cause and the command that checks it, not only paho's words.
func TestStatusSaysWhyTheHubRefuses(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	must(t, srv.AddHook(&refuseAll{}, nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(l))
	must(t, srv.Serve())
	t.Cleanup(func() { srv.Close() })
	b := newBoard(t, l.Address(), "")
	sock, msgs := testproc.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, b.cfg, agent.Options{Logger: slog.New(slog.DiscardHandler), Notifier: sdnotify.FromEnv()})
	}()
	t.Cleanup(func() { cancel(); <-done })
	timeout := time.After(20 * time.Second)
	last := ""
	for {
		select {
		case m := <-msgs:
			last = m
			// mochi refuses a failed authentication with 5, "not authorized": c2d-hub's answer for a
			// disabled or unknown device.
			if strings.Contains(m, `last error: not Authorized; likely: the hub knows device "pi-1" but it is disabled`) &&
				strings.Contains(m, "`c2d device enable pi-1`") {
				return
			}
		case <-timeout:
			t.Fatalf("STATUS never said why the hub refused the connection; last: %q", last)
		}
	}
}
