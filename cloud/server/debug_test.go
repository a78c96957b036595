package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/server"
)

// listen.debug (--debug-listen) takes loopback addresses only: pprof has no authentication and
// its dumps show the hub's memory.
func TestDebugListenIsLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "[::]:6060", "192.168.1.5:6060", "hub.example:6060", "10.0.0.1:0"} {
		cfg := server.Default()
		cfg.Listen.Debug = addr
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "listen.debug: ") || !strings.Contains(err.Error(), "only listens on loopback") {
			t.Errorf("listen.debug %q: err = %v, want a refusal naming listen.debug and loopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "127.0.0.2:0", "[::1]:6060", "localhost:6060", "LOCALHOST:0", server.Off, ""} {
		cfg := server.Default()
		cfg.Listen.Debug = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("listen.debug %q refused: %v", addr, err)
		}
	}
	if server.Default().Listen.Debug != server.Off {
		t.Errorf("listen.debug defaults to %q, want off", server.Default().Listen.Debug)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// With listen.debug set the hub serves pprof there (and says where in endpoints.json); off, there
// is no such listener and the API does not serve pprof either.
func TestDebugListenerServesPprof(t *testing.T) {
	h := newITHub(t, func(c *server.Config) { c.Listen.Debug = "127.0.0.1:0" })
	ep := h.s.Endpoints()
	if !strings.HasPrefix(ep.Debug, "127.0.0.1:") || strings.HasSuffix(ep.Debug, ":0") {
		t.Fatalf("endpoints debug = %q, want the bound loopback address", ep.Debug)
	}
	if code, body := get(t, "http://"+ep.Debug+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") || !strings.Contains(body, "allocs") {
		t.Fatalf("GET /debug/pprof/: %d %.200q", code, body)
	}
	if code, body := get(t, "http://"+ep.Debug+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile: total") {
		t.Fatalf("GET /debug/pprof/goroutine?debug=1: %d %.200q", code, body)
	}
	// The API listener is not the debug listener.
	if code, _ := get(t, h.base+"/debug/pprof/"); code == 200 {
		t.Fatalf("the API listener serves /debug/pprof/")
	}

	off := newITHub(t, nil)
	if ep := off.s.Endpoints(); ep.Debug != "" {
		t.Fatalf("debug listener %q without listen.debug", ep.Debug)
	}
	if code, _ := get(t, off.base+"/debug/pprof/"); code == 200 {
		t.Fatalf("the API listener serves /debug/pprof/ with the debug listener off")
	}
}
