package testproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a child's stdout and stderr, a
// logger) and readers (the test printing it).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Build runs `go build flags... -o DIR/ pkgs...` with CGO_ENABLED=0, as the programs ship; each
// binary lands in dir under its package's last path element (c2d-hub, c2d-agent, c2d). Package
// paths are as go build takes them: import paths, or relative to the test's directory.
func Build(dir string, flags []string, pkgs ...string) error {
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", filepath.Clean(dir)+string(filepath.Separator))
	cmd := exec.Command(goTool(), append(args, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// goTool is the go command running this test (go test sets GOROOT), else the one on PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// HubOptions configure a c2d-hub serve process.
type HubOptions struct {
	// Data is the data directory (created if missing). StartHub defaults it to t.TempDir().
	Data string
	// Config is hub.yaml's content, written into Data and passed with --config; "" = none.
	Config string
	// Args follow `serve --data DATA [--config FILE]`: listeners (127.0.0.1:0 or off),
	// --hostname, --log-level.
	Args []string
	// Env is added to the test's environment.
	Env []string
	// Ready bounds the wait for endpoints.json; default 30s.
	Ready time.Duration
}

// Hub is a running c2d-hub serve.
type Hub struct {
	Data      string
	Endpoints server.Endpoints               // as the hub wrote them, with its pid
	Owner     iothub.ServiceConnectionString // iothubowner, from `c2d-hub connection-string`
	Client    *apiclient.Client              // owner client on the plain HTTP API, else on HTTPS with the hub's CA; nil when both are off
	Log       *SyncBuffer                    // the hub's stdout and stderr

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's, once exited is closed
}

// RunHub starts `c2d-hub serve` and returns once it has written endpoints.json with its pid and
// the owner's connection string and client are made. For TestMain; tests use StartHub.
func RunHub(ctx context.Context, bin string, o HubOptions) (*Hub, error) {
	if o.Ready == 0 {
		o.Ready = 30 * time.Second
	}
	if err := os.MkdirAll(o.Data, 0o700); err != nil {
		return nil, err
	}
	args := []string{"serve", "--data", o.Data}
	if o.Config != "" {
		cfg := filepath.Join(o.Data, "hub.yaml")
		if err := os.WriteFile(cfg, []byte(o.Config), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "--config", cfg)
	}
	args = append(args, o.Args...)
	if !slices.Contains(o.Args, "--amqps") {
		// AMQPS defaults to 0.0.0.0:5671, which hubs of concurrent tests would fight over.
		args = append(args, "--amqps", "off")
	}
	h := &Hub{Data: o.Data, Log: &SyncBuffer{}, exited: make(chan struct{})}
	h.cmd = exec.Command(bin, args...)
	h.cmd.Env = append(os.Environ(), o.Env...)
	h.cmd.Stdout, h.cmd.Stderr = h.Log, h.Log
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { h.err = h.cmd.Wait(); close(h.exited) }()
	if err := h.ready(ctx, o.Ready); err != nil {
		h.Kill()
		return nil, err
	}
	out, err := exec.CommandContext(ctx, bin, "connection-string", "--data", o.Data, "--policy", "iothubowner").Output()
	if err == nil {
		h.Owner, err = iothub.ParseServiceConnectionString(strings.TrimSpace(string(out)))
	}
	if err != nil {
		h.Kill()
		return nil, fmt.Errorf("c2d-hub connection-string --policy iothubowner: %w", err)
	}
	var co apiclient.Options
	switch ep := h.Endpoints; {
	case ep.HTTP != "":
		co.Endpoint = "http://" + ep.HTTP
	case ep.HTTPS != "":
		co.Endpoint, co.CAFile = "https://"+ep.HTTPS, ep.CA
	}
	if co.Endpoint != "" {
		if h.Client, err = apiclient.New(h.Owner, co); err != nil {
			h.Kill()
			return nil, err
		}
	}
	return h, nil
}

// ready polls for endpoints.json written by this process (a restart on the same data directory
// must not read its predecessor's).
func (h *Hub) ready(ctx context.Context, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		ep, err := server.ReadEndpoints(h.Data)
		if err == nil && ep.PID == h.cmd.Process.Pid {
			h.Endpoints = ep
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("c2d-hub (pid %d) wrote no endpoints.json within %v\n%s", h.cmd.Process.Pid, bound, h.Log)
		}
		select {
		case <-h.exited:
			return fmt.Errorf("c2d-hub exited before writing endpoints.json: %v\n%s", h.err, h.Log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling for the file, with a deadline
		}
	}
}

// StartHub is RunHub for a test: it fails the test if the hub does not come up, stops it when
// the test ends and then prints its output if the test failed.
func StartHub(t testing.TB, bin string, o HubOptions) *Hub {
	t.Helper()
	if o.Data == "" {
		o.Data = t.TempDir()
	}
	h, err := RunHub(context.Background(), bin, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("c2d-hub output:\n%s", h.Log)
		}
	})
	return h
}

// Stop sends SIGTERM and waits for the hub to exit; after 20s it kills it and says so. Stopping
// a stopped hub is a no-op.
func (h *Hub) Stop() error {
	select {
	case <-h.exited:
		return nil
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
		return nil
	case <-time.After(20 * time.Second):
		h.Kill()
		return errors.New("c2d-hub did not stop within 20s of SIGTERM")
	}
}

// Kill sends SIGKILL and waits for the hub to be gone.
func (h *Hub) Kill() {
	_ = h.cmd.Process.Kill()
	<-h.exited
}
