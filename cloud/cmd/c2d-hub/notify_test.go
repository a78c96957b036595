package main_test

import (
	"github.com/c2d-project/c2d/internal/testproc"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/server"
)

// Under systemd (Type=notify) the hub says READY=1 with a status line only once endpoints.json is
// written, and STOPPING=1 when SIGTERM arrives.
func TestSystemdNotify(t *testing.T) {
	sock, msgs := testproc.NotifySocket(t)
	next := func() string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(20 * time.Second):
			t.Fatal("no sd_notify message within 20s")
			return ""
		}
	}
	data := t.TempDir()
	p := start(t, data, []string{"NOTIFY_SOCKET=" + sock}, append([]string{"--data", data}, loopback...)...)
	ready := next()
	if !strings.Contains(ready, "READY=1") || !strings.Contains(ready, "STATUS=serving ") || !strings.Contains(ready, p.ep.HTTPS) {
		t.Fatalf("first notification %q: want READY=1 and a STATUS naming the listeners", ready)
	}
	if _, err := os.Stat(filepath.Join(data, server.EndpointsFile)); err != nil {
		t.Fatalf("READY=1 before endpoints.json: %v", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := next(); !strings.Contains(m, "STOPPING=1") {
		t.Fatalf("after SIGTERM got %q, want STOPPING=1", m)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
