package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/server"
)

// Issue #17: under systemd stdout is the journal; the first start must not write the iothubowner
// key there, only how to read it. Outside systemd (a terminal) it prints the connection string.
func TestFirstStartNoticeKeepsTheKeyOutOfTheJournal(t *testing.T) {
	for _, journal := range []bool{true, false} {
		t.Run(map[bool]string{true: "journal", false: "terminal"}[journal], func(t *testing.T) {
			if journal {
				t.Setenv("JOURNAL_STREAM", "8:12345")
			} else {
				t.Setenv("JOURNAL_STREAM", "")
			}
			cfg := server.Default()
			cfg.DataDir = t.TempDir()
			cfg.HostName = "first.test"
			cfg.Listen = server.Listen{MQTT: server.Off, HTTP: "127.0.0.1:0", MQTTS: server.Off, HTTPS: server.Off, WS: server.Off, WSS: server.Off}
			var out bytes.Buffer
			s, err := server.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), &out)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := s.Hub().Policy("iothubowner")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			hasKey := strings.Contains(out.String(), p.PrimaryKey)
			if journal && (hasKey || !strings.Contains(out.String(), "c2d-hub connection-string --data "+cfg.DataDir)) {
				t.Errorf("under systemd the notice is:\n%s\nwant no key, and how to read it", &out)
			}
			if !journal && !hasKey {
				t.Errorf("on a terminal the notice is:\n%s\nwant the iothubowner connection string", &out)
			}
		})
	}
}
