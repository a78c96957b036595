package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestPostgresOutageAndRecovery: a hub on PostgreSQL whose server crashes (pg_ctl stop -m
// immediate) reports itself unhealthy and refuses sends with ServiceUnavailable; when the server
// is back it recovers by itself, and every send acknowledged before the crash is still queued.
func TestPostgresOutageAndRecovery(t *testing.T) {
	pgtest.Need(t)
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	url, err := pg.NewDB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h := newITHub(t, func(c *server.Config) { c.Store = url })
	ctx := context.Background()
	if _, err := h.owner.CreateDevice(ctx, "pi-1", "", ""); err != nil {
		t.Fatal(err)
	}
	var acked []string
	for i := range 20 {
		r, err := h.owner.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "before-" + string(rune('a'+i))})
		if err != nil {
			t.Fatalf("send before the crash: %v", err)
		}
		acked = append(acked, r.MessageID)
	}

	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/healthz 503 with PostgreSQL down", func() bool {
		_, err := h.owner.Health(ctx)
		var ie *iothub.Error
		return errors.As(err, &ie) && ie.Code == 503000
	})
	_, err = h.owner.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "during"})
	var ie *iothub.Error
	if !errors.As(err, &ie) || ie.Code != iothub.CodeServiceUnavailable {
		t.Fatalf("send with PostgreSQL down: %v; want ServiceUnavailable (%d)", err, iothub.CodeServiceUnavailable)
	}

	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/healthz 200 after PostgreSQL came back", func() bool {
		_, err := h.owner.Health(ctx)
		return err == nil
	})
	if _, err := h.owner.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "after"}); err != nil {
		t.Fatalf("send after recovery: %v", err)
	}
	q, err := h.owner.Queue(ctx, "pi-1")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range q {
		have[m.MessageID] = true
	}
	for _, id := range append(acked, "after") {
		if !have[id] {
			t.Errorf("acknowledged message %s is gone after the crash", id)
		}
	}
	if have["during"] {
		t.Error("the refused send was queued")
	}
}

// A store that cannot be reached is a start-up error naming the store, without its password.
func TestUnreachableStoreFailsStartNamingIt(t *testing.T) {
	cfg := server.Default()
	cfg.DataDir = t.TempDir()
	cfg.HostName = itHost
	cfg.Listen = server.Listen{MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", MQTTS: server.Off, HTTPS: server.Off, WS: server.Off, WSS: server.Off}
	cfg.Store = "postgres://c2d:s3cret@127.0.0.1:1/fleet?connect_timeout=2"
	_, err := server.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "postgres://c2d@127.0.0.1:1/fleet") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("start on an unreachable store: %v", err)
	}
	cfg.Store = "mysql://x"
	if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), "store: ") {
		t.Fatalf("validate an unknown store: %v", err)
	}
}
