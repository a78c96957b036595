package testproc_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/testproc"
)

func TestSyncBufferConcurrentWriters(t *testing.T) {
	var b testproc.SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 800 {
		t.Fatalf("got %d bytes, want 800", n)
	}
}

// One build and one hub: it comes up on loopback, serves its owner, stops on SIGTERM; a hub
// that cannot start is an error carrying its output.
func TestHub(t *testing.T) {
	dir := t.TempDir()
	if err := testproc.Build(dir, nil, "../../cloud/cmd/c2d-hub"); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "c2d-hub")
	h := testproc.StartHub(t, bin, testproc.HubOptions{Config: "feedback:\n  interval: 50ms\n", Args: []string{
		"--hostname", "hub.test", "--mqtt", "127.0.0.1:0", "--mqtts", "off", "--http", "127.0.0.1:0", "--https", "off", "--amqps", "off"}})
	if !strings.HasPrefix(h.Endpoints.MQTT, "127.0.0.1:") || h.Owner.HostName != "hub.test" || h.Owner.SharedAccessKeyName != "iothubowner" {
		t.Fatalf("endpoints %+v, owner %+v", h.Endpoints, h.Owner)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.Client.CreateDevice(ctx, "pi-1", "", ""); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	_, err := testproc.RunHub(ctx, bin, testproc.HubOptions{Data: t.TempDir(), Args: []string{"--no-such-flag"}})
	if err == nil || !strings.Contains(err.Error(), "exited before writing endpoints.json") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("bad flag: %v", err)
	}
}
