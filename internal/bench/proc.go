package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
)

// HostName is the hub host name every bench and chaos hub signs for.
const HostName = "bench.c2d.local"

// BuildBinaries builds c2d-hub and c2d-agent (CGO_ENABLED=0, as shipped) from the module at
// moduleRoot into dir and returns their paths.
func BuildBinaries(ctx context.Context, moduleRoot, dir string) (hubBin, agentBin string, err error) {
	hubBin, agentBin = filepath.Join(dir, "c2d-hub"), filepath.Join(dir, "c2d-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+"/", "./cloud/cmd/c2d-hub", "./agent/cmd/c2d-agent")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build c2d-hub c2d-agent: %w\n%s", err, out)
	}
	return hubBin, agentBin, nil
}

// ModuleRoot walks up from the working directory to the directory holding go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreeAddr returns a loopback address with a port that was free a moment ago (for processes that
// must come back on the same port after a restart).
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// HubProc is a c2d-hub serve process.
type HubProc struct {
	Bin, DataDir, ConfigPath string
	MQTTAddr, HTTPAddr       string // requested ("127.0.0.1:0" or fixed)
	Endpoints                server.Endpoints
	Log                      *os.File

	store  string
	cmd    *exec.Cmd
	exited chan struct{}
	client *apiclient.Client
	mu     sync.Mutex
}

// HubOptions configure StartHub.
type HubOptions struct {
	Bin, DataDir string
	Config       string // YAML written to DATA/../hub.yaml; "" = none
	MQTTAddr     string // default 127.0.0.1:0
	HTTPAddr     string // default 127.0.0.1:0
	LogPath      string // stderr/stdout go here (appended); default DATA/../hub.log
	Store        string // the store the config names ("" = SQLite in DataDir): where the policies are read
}

// StartHub starts `c2d-hub serve` and waits until it has written a fresh endpoints.json and
// answers /healthz.
func StartHub(ctx context.Context, o HubOptions) (*HubProc, error) {
	if o.MQTTAddr == "" {
		o.MQTTAddr = "127.0.0.1:0"
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, err
	}
	h := &HubProc{Bin: o.Bin, DataDir: o.DataDir, MQTTAddr: o.MQTTAddr, HTTPAddr: o.HTTPAddr, store: o.Store}
	if o.Config != "" {
		h.ConfigPath = filepath.Join(filepath.Dir(filepath.Clean(o.DataDir)), filepath.Base(o.DataDir)+"-hub.yaml")
		if err := os.WriteFile(h.ConfigPath, []byte(o.Config), 0o600); err != nil {
			return nil, err
		}
	}
	if o.LogPath == "" {
		o.LogPath = filepath.Join(filepath.Dir(filepath.Clean(o.DataDir)), filepath.Base(o.DataDir)+"-hub.log")
	}
	f, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	h.Log = f
	if err := h.Start(ctx); err != nil {
		h.Kill()
		f.Close()
		return nil, err
	}
	return h, nil
}

// Start (re)starts the process on the same data directory and addresses.
func (h *HubProc) Start(ctx context.Context) error {
	args := []string{"serve", "--data", h.DataDir, "--hostname", HostName, "--mqtt", h.MQTTAddr,
		"--mqtts", "off", "--http", h.HTTPAddr, "--https", "off", "--amqps", "off", "--amqp", "127.0.0.1:0", "--log-level", "warn"}
	if h.ConfigPath != "" {
		args = append(args, "--config", h.ConfigPath)
	}
	cmd := exec.Command(h.Bin, args...)
	cmd.Stdout, cmd.Stderr = h.Log, h.Log
	cmd.Env = os.Environ()
	fmt.Fprintf(h.Log, "=== %s start %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", h.Bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	h.mu.Lock()
	h.cmd, h.exited = cmd, exited
	h.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ep, err := server.ReadEndpoints(h.DataDir)
		if err == nil && ep.PID == cmd.Process.Pid && ep.HTTP != "" {
			h.Endpoints = ep
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("c2d-hub exited during start-up (log: %s)", h.Log.Name())
		case <-ctx.Done():
			h.Kill()
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the log
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
			}
			h.Kill()
			return fmt.Errorf("c2d-hub did not write endpoints.json within 30s (goroutine dump in log: %s)", h.Log.Name())
		}
	}
	if h.client == nil || h.client.Endpoint() != "http://"+h.Endpoints.HTTP {
		cs, err := server.StoreConnectionString(ctx, h.store, h.DataDir, HostName, "iothubowner")
		if err != nil {
			return err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 512
		h.client, err = apiclient.New(cs, apiclient.Options{Endpoint: "http://" + h.Endpoints.HTTP, HTTPClient: &http.Client{Transport: tr}})
		if err != nil {
			return err
		}
	}
	return nil
}

// Client is a service client (iothubowner) for the hub's HTTP API. A restart on a new HTTP port
// makes a new one: call Client again after Start.
func (h *HubProc) Client() *apiclient.Client { return h.client }

// ServiceConnectionString is the iothubowner connection string.
func (h *HubProc) ServiceConnectionString(ctx context.Context) (iothub.ServiceConnectionString, error) {
	return server.ConnectionString(ctx, h.DataDir, HostName, "iothubowner")
}

// PID of the running process (0 when stopped).
func (h *HubProc) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (h *HubProc) Kill() { h.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (graceful shutdown) and waits.
func (h *HubProc) Stop() { h.signal(syscall.SIGTERM) }

func (h *HubProc) signal(sig syscall.Signal) {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	h.mu.Lock()
	if h.cmd == cmd {
		h.cmd = nil
	}
	h.mu.Unlock()
}

// Close stops the hub and closes its log.
func (h *HubProc) Close() {
	h.Stop()
	h.Log.Close()
}

// Proc is a generic child process (the agent).
type Proc struct {
	Cmd    *exec.Cmd
	Exited chan struct{}
	Start  time.Time
}

// StartProc starts bin with args, output appended to logPath, extra environment added.
func StartProc(bin string, args []string, env []string, logPath string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "=== %s start %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	p := &Proc{Cmd: cmd, Exited: make(chan struct{}), Start: time.Now()}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); f.Close(); close(p.Exited) }()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.Exited
}

// Stop sends SIGTERM and waits up to timeout before killing.
func (p *Proc) Stop(timeout time.Duration) {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
	case <-time.After(timeout):
		p.Kill()
	}
}

// RSS returns VmRSS and VmHWM of pid in bytes (from /proc/PID/status).
func RSS(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm, nil
}

// CPUTime returns utime+stime of pid (from /proc/PID/stat), assuming 100 clock ticks per second
// (USER_HZ on every Linux architecture Go supports).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// RaiseFileLimit raises RLIMIT_NOFILE to its hard limit explicitly, so child processes (the hub)
// inherit it too (Go raises its own soft limit but restores the old one for children).
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// WaitFor polls cond every 'every' until it returns true or the deadline passes.
func WaitFor(ctx context.Context, timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}
