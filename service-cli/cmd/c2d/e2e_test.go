package main

// End-to-end tests: the real c2d binary against a real c2d-hub process on loopback, with real MQTT
// devices (paho) on the other side. Everything a user would see is asserted: stdout, stderr, exit
// codes and JSON fields.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/testproc"
)

var (
	binDir string
	c2dBin string
	hubBin string
	hub    *testproc.Hub
)

// hubConfig is the test hub's queue settings: expiries down to 1s (Expired in seconds), a 1s lock
// and 2 deliveries (DeliveryCountExceeded in seconds), 5 messages per queue (queue full quickly).
const hubConfig = `queue:
  min_ttl: 1s
  lock_timeout: 1s
  max_delivery_count: 2
  max_queue_depth: 5
feedback:
  interval: 100ms
`

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var err error
	binDir, err = os.MkdirTemp("", "c2d-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	c2dBin = filepath.Join(binDir, "c2d")
	hubBin = filepath.Join(binDir, "c2d-hub")
	pkgs := []string{"github.com/c2d-project/c2d/service-cli/cmd/c2d", "github.com/c2d-project/c2d/cloud/cmd/c2d-hub"}
	// C2D_E2E_HUB_BIN runs an already built hub (e.g. bin/c2d-hub after `make build`).
	if bin := os.Getenv("C2D_E2E_HUB_BIN"); bin != "" {
		hubBin = bin
		pkgs = pkgs[:1]
	}
	if err := testproc.Build(binDir, nil, pkgs...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hub, err = startHub(filepath.Join(binDir, "hub"), "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if err := hub.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- hub log ---\n%s\n", hub.Log.String())
	}
	return code
}

// startHub runs c2d-hub on data with the test config; httpAddr is its plain HTTP API address.
func startHub(data, httpAddr string) (*testproc.Hub, error) {
	return testproc.RunHub(context.Background(), hubBin, testproc.HubOptions{Data: data, Config: hubConfig, Args: []string{
		"--hostname", "hub.test", "--mqtt", "127.0.0.1:0", "--mqtts", "off", "--http", httpAddr, "--https", "127.0.0.1:0", "--amqps", "off"}})
}

// connectionString is the policy's, from `c2d-hub connection-string`.
func connectionString(h *testproc.Hub, policy string) (string, error) {
	out, err := exec.Command(hubBin, "connection-string", "--data", h.Data, "--policy", policy).Output()
	if err != nil {
		return "", fmt.Errorf("c2d-hub connection-string --policy %s: %w", policy, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ---- running c2d ----

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// baseEnv is the process environment without any C2D_ variable of the developer's shell.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "C2D_") {
			env = append(env, kv)
		}
	}
	return env
}

// hubEnv points c2d at the test hub with the owner policy over plain HTTP.
func hubEnv() []string {
	return append(baseEnv(), "C2D_CONNECTION_STRING="+hub.Owner.String(), "C2D_ENDPOINT=http://"+hub.Endpoints.HTTP)
}

func c2dCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c2dBin, args...)
	cmd.Env = env
	return cmd
}

func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := c2dCmd(ctx, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("c2d %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// c2d runs the binary against the test hub.
func c2d(t *testing.T, args ...string) result {
	t.Helper()
	return runEnv(t, hubEnv(), args...)
}

// must runs c2d and fails the test unless it exits with code.
func must(t *testing.T, code int, args ...string) result {
	t.Helper()
	r := c2d(t, args...)
	if r.code != code {
		t.Fatalf("c2d %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

// jsonOut runs c2d with -o json, expects code and decodes stdout into v.
func jsonOut(t *testing.T, v any, code int, args ...string) result {
	t.Helper()
	r := must(t, code, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("c2d %s -o json: stdout is not JSON: %v\n%s", strings.Join(args, " "), err, r)
	}
	return r
}

// jsonFields decodes stdout as a JSON object of raw fields, to check names as well as values.
func jsonFields(t *testing.T, s string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, s)
	}
	return m
}

func str(t *testing.T, m map[string]json.RawMessage, key string) string {
	t.Helper()
	raw, ok := m[key]
	if !ok {
		t.Fatalf("JSON has no field %q: %v", key, keys(m))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("field %q = %s, not a string", key, raw)
	}
	return s
}

func num(t *testing.T, m map[string]json.RawMessage, key string) float64 {
	t.Helper()
	raw, ok := m[key]
	if !ok {
		t.Fatalf("JSON has no field %q: %v", key, keys(m))
	}
	var n float64
	if err := json.Unmarshal(raw, &n); err != nil {
		t.Fatalf("field %q = %s, not a number", key, raw)
	}
	return n
}

func keys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

var runs atomic.Int64

// uniq makes a device id unique within the shared hub (go test -count=N reuses it).
func uniq(base string) string { return fmt.Sprintf("%s-%d", base, runs.Add(1)) }

// newDevice registers a device (its id made unique from base) through c2d and returns its id.
func newDevice(t *testing.T, base string) string {
	t.Helper()
	id := uniq(base)
	must(t, 0, "device", "create", id)
	return id
}

// ---- a real MQTT device ----

type received struct {
	topic string
	msg   *iothub.Message
	body  []byte
}

type device struct {
	id   string
	c    mqtt.Client
	msgs chan received
}

// connectDevice connects a device with the connection string c2d prints for it. With ext it opts
// into the disposition extension (its PUBACK no longer completes; it must complete or reject).
func connectDevice(t *testing.T, id string, ext bool) *device {
	t.Helper()
	r := must(t, 0, "device", "connection-string", id)
	dcs, err := iothub.ParseDeviceConnectionString(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("c2d device connection-string printed %q: %v", r.stdout, err)
	}
	tok, err := dcs.Token(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	extra := url.Values{}
	if ext {
		extra.Set(iothub.ExtensionParam, iothub.ExtensionDispositions)
	}
	d := &device{id: id, msgs: make(chan received, 16)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + hub.Endpoints.MQTT).
		SetClientID(iothub.ClientID(id, "")).
		SetUsername(iothub.FormatUsername(dcs.HostName, id, "", extra)).
		SetPassword(tok).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetProtocolVersion(4)
	opts.SetDefaultPublishHandler(func(mqtt.Client, mqtt.Message) {})
	d.c = mqtt.NewClient(opts)
	if tk := d.c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("device %s connect: %v", id, tk.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(100) })
	tk := d.c.Subscribe(iothub.DeviceBoundFilter(id), 1, func(_ mqtt.Client, m mqtt.Message) {
		_, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
		if err != nil {
			t.Errorf("device %s: bad topic %q: %v", id, m.Topic(), err)
			return
		}
		d.msgs <- received{topic: m.Topic(), msg: msg, body: m.Payload()} // buffered; handler never blocks long
	})
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("device %s subscribe: %v", id, tk.Error())
	}
	return d
}

func (d *device) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-d.msgs:
		return r
	case <-time.After(15 * time.Second):
		t.Fatalf("device %s received nothing within 15s", d.id)
		return received{}
	}
}

// reject settles a delivery with the extension's reject disposition and a reason.
func (d *device) reject(t *testing.T, r received, reason string) {
	t.Helper()
	if r.msg.LockToken == "" {
		t.Fatalf("device %s: message %s has no lock token (extension not active?)", d.id, r.msg.MessageID)
	}
	body, _ := json.Marshal(iothub.DispositionBody{Reason: reason})
	tk := d.c.Publish(iothub.DispositionTopic(d.id, r.msg.LockToken, iothub.DispositionReject), 1, false, body)
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("device %s reject: %v", d.id, tk.Error())
	}
}

// ---- background c2d ----

type bg struct {
	cmd    *exec.Cmd
	stdout *testproc.SyncBuffer
	stderr *testproc.SyncBuffer
	done   chan result
}

func start(t *testing.T, args ...string) *bg {
	t.Helper()
	return startEnv(t, hubEnv(), args...)
}

func startEnv(t *testing.T, env []string, args ...string) *bg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	b := &bg{cmd: c2dCmd(ctx, env, args...), stdout: &testproc.SyncBuffer{}, stderr: &testproc.SyncBuffer{}, done: make(chan result, 1)}
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := b.cmd.Wait()
		r := result{stdout: b.stdout.String(), stderr: b.stderr.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
			if ee.ExitCode() < 0 {
				r.code = -1
			}
		}
		b.done <- r
	}()
	return b
}

func (b *bg) wait(t *testing.T) result {
	t.Helper()
	select {
	case r := <-b.done:
		return r
	case <-time.After(45 * time.Second):
		t.Fatalf("c2d %v did not exit within 45s; stdout so far:\n%s", b.cmd.Args, b.stdout.String())
		return result{}
	}
}
