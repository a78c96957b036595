package main_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/internal/testproc"
)

const testVersion = "9.9.9-test"

var hubBin string

// TestMain builds the real binary once, stamped like `make build` does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "c2d-hub-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hubBin = filepath.Join(dir, "c2d-hub")
	if err := testproc.Build(dir, []string{"-ldflags", "-X github.com/c2d-project/c2d/internal/version.Version=" + testVersion}, "."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running c2d-hub.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	data   string
	stdout *testproc.SyncBuffer
	stderr *testproc.SyncBuffer
	done   chan error
	ep     server.Endpoints
}

var loopback = []string{"--mqtt", "127.0.0.1:0", "--mqtts", "127.0.0.1:0", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--amqps", "127.0.0.1:0"}

// start runs `c2d-hub serve args...` and waits for its endpoints.json (the one with its pid).
func start(t *testing.T, data string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, data: data, stdout: &testproc.SyncBuffer{}, stderr: &testproc.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(hubBin, append([]string{"serve"}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("c2d-hub stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		ep, err := server.ReadEndpoints(data)
		if err == nil && ep.PID == p.cmd.Process.Pid {
			p.ep = ep
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("c2d-hub exited before it was ready: %v\nstderr:\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no endpoints.json for pid %d within 20s\nstderr:\n%s", p.cmd.Process.Pid, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for the file, with a deadline
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		p.t.Fatalf("c2d-hub did not exit within 30s\nstderr:\n%s", p.stderr.String())
		return -1
	}
}

func (p *proc) caPool() *x509.CertPool {
	p.t.Helper()
	pem, err := os.ReadFile(p.ep.CA)
	if err != nil {
		p.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		p.t.Fatal("no certificate in", p.ep.CA)
	}
	return pool
}

// client is an iothubowner API client over HTTPS that trusts the hub's generated CA.
func (p *proc) client(cs iothub.ServiceConnectionString) *apiclient.Client {
	p.t.Helper()
	c, err := apiclient.New(cs, apiclient.Options{Endpoint: "https://" + p.ep.HTTPS, CAFile: p.ep.CA})
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

func (p *proc) connectionString(policy string) iothub.ServiceConnectionString {
	p.t.Helper()
	out, err := exec.Command(hubBin, "connection-string", "--data", p.data, "--policy", policy).CombinedOutput()
	if err != nil {
		p.t.Fatalf("connection-string: %v: %s", err, out)
	}
	cs, err := iothub.ParseServiceConnectionString(strings.TrimSpace(string(out)))
	if err != nil {
		p.t.Fatalf("connection-string printed %q: %v", out, err)
	}
	return cs
}

// device is a real MQTT device (paho) on the hub.
type device struct {
	c    paho.Client
	msgs chan paho.Message
}

func connectDevice(t *testing.T, brokerURL string, tc *tls.Config, host string, dev iothub.Device, extension bool) *device {
	t.Helper()
	cs := iothub.DeviceConnectionString{HostName: host, DeviceID: dev.DeviceID, SharedAccessKey: dev.Authentication.SymmetricKey.PrimaryKey}
	tok, err := cs.Token(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	extra := url.Values{}
	if extension {
		extra.Set(iothub.ExtensionParam, iothub.ExtensionDispositions)
	}
	d := &device{msgs: make(chan paho.Message, 1000)}
	o := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(dev.DeviceID).
		SetUsername(iothub.FormatUsername(host, dev.DeviceID, "", extra)).SetPassword(tok).
		SetCleanSession(false).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.msgs <- m })
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	d.c = paho.NewClient(o)
	if ct := d.c.Connect(); !ct.WaitTimeout(10*time.Second) || ct.Error() != nil {
		t.Fatalf("device %s connect: %v", dev.DeviceID, ct.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	st := d.c.Subscribe(iothub.DeviceBoundFilter(dev.DeviceID), 1, nil)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe: %v", st.Error())
	}
	return d
}

func (d *device) next(t *testing.T) (paho.Message, *iothub.Message) {
	t.Helper()
	select {
	case m := <-d.msgs:
		_, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
		if err != nil {
			t.Fatal(err)
		}
		msg.Body = m.Payload()
		return m, msg
	case <-time.After(15 * time.Second):
		t.Fatal("no device-bound message within 15s")
		return nil, nil
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(hubBin, "--version").CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "c2d-hub "+testVersion+" (commit ") {
		t.Fatalf("--version = %q", got)
	}
}

func TestBadConfigFailsNamingTheField(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(cfg, []byte("queue:\n  max_delivery_count: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--data", dir, "--config", cfg}, "c2d-hub: load " + cfg + ": queue.max_delivery_count: 0 is out of range [1, 100]"},
		{[]string{"serve", "--data", dir, "--mqtt", "localhost"}, "listen.mqtt"},
		{[]string{"serve", "--data", dir, "--log-format", "xml"}, "log.format"},
		{[]string{"serve", "--data", dir, "--nope"}, "unknown flag: --nope"},
		{[]string{"connection-string", "--data", dir}, "no hub store in " + dir},
	}
	for _, tc := range cases {
		out, err := exec.Command(hubBin, tc.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%v: err %v, want exit 1; output %s", tc.args, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: output %q lacks %q", tc.args, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "hub.db")); err == nil {
		t.Error("a refused configuration still created the store")
	}
}

// The whole path through the real binary: zero-configuration data directory, first-start notice,
// HTTPS with the generated CA, a device over MQTTS, send → deliver → complete/reject → feedback,
// connection-string while running, metrics, SIGTERM → exit 0.
func TestServeEndToEnd(t *testing.T) {
	state := t.TempDir()
	data := filepath.Join(state, "c2d-hub") // $XDG_STATE_HOME/c2d-hub: no --data given
	p := start(t, data, []string{"XDG_STATE_HOME=" + state, "STATE_DIRECTORY="}, append([]string{"--wss", "127.0.0.1:0"}, loopback...)...)
	ctx := ctxT(t, 60*time.Second)

	host, _ := os.Hostname()
	if p.ep.HostName != strings.ToLower(host) || p.ep.CA != filepath.Join(data, "tls", "ca.pem") || p.ep.Version != testVersion {
		t.Fatalf("endpoints %+v", p.ep)
	}
	notice := p.stdout.String()
	if !strings.Contains(notice, "SharedAccessKeyName=iothubowner;SharedAccessKey=") || !strings.Contains(notice, p.ep.CA) {
		t.Fatalf("first-start notice:\n%s", notice)
	}
	owner := p.connectionString("iothubowner")
	if !strings.Contains(notice, owner.String()) {
		t.Fatalf("connection-string %q differs from the first-start notice:\n%s", owner, notice)
	}
	c := p.client(owner)

	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" || h.Version != testVersion {
		t.Fatalf("healthz over HTTPS: %+v, %v", h, err)
	}
	// Plain HTTP serves the same API.
	if resp, err := http.Get("http://" + p.ep.HTTP + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz over HTTP: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	dev, err := c.CreateDevice(ctx, "pi-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: p.caPool(), ServerName: p.ep.HostName}
	// The Azure way: PUBACK completes.
	plain := connectDevice(t, "ssl://"+p.ep.MQTTS, tc, p.ep.HostName, dev, false)
	svc := p.client(p.connectionString("service"))
	res, err := svc.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "led-on", Ack: iothub.AckFull,
		Properties: []iothub.AppProperty{{Name: "led", Value: "on"}}, Body: []byte(`{"pin":17}`)})
	if err != nil {
		t.Fatal(err)
	}
	_, got := plain.next(t)
	if got.MessageID != "led-on" || string(got.Body) != `{"pin":17}` || len(got.Properties) != 1 || got.Properties[0].Value != "on" {
		t.Fatalf("device got %+v", got)
	}
	st, err := svc.MessageStatus(ctx, "pi-1", res.MessageID, 20*time.Second)
	if err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("status after PUBACK = %+v, %v", st, err)
	}
	plain.c.Disconnect(100)

	// The extension, over secure WebSockets (same CA): reject with a reason.
	if p.ep.WSS == "" {
		t.Fatalf("no wss endpoint: %+v", p.ep)
	}
	ext := connectDevice(t, "wss://"+p.ep.WSS+"/$iothub/websocket", tc, p.ep.HostName, dev, true)
	if _, err := svc.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "bad-pin", Ack: iothub.AckNegative}); err != nil {
		t.Fatal(err)
	}
	_, got = ext.next(t)
	if got.LockToken == "" {
		t.Fatalf("extension device got no lock token: %+v", got)
	}
	body := []byte(`{"reason":"pin 99 not configured"}`)
	if pt := ext.c.Publish(iothub.DispositionTopic("pi-1", got.LockToken, iothub.DispositionReject), 1, false, body); !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		t.Fatalf("disposition publish: %v", pt.Error())
	}
	st, err = svc.MessageStatus(ctx, "pi-1", "bad-pin", 20*time.Second)
	if err != nil || st.Outcome != iothub.StatusRejected || st.Reason != "pin 99 not configured" {
		t.Fatalf("status after reject = %+v, %v", st, err)
	}

	// Feedback for both.
	recs := map[string]iothub.FeedbackRecord{}
	for len(recs) < 2 {
		fb, err := svc.ReceiveFeedback(ctx, 20*time.Second)
		if err != nil || fb == nil {
			t.Fatalf("feedback: %+v, %v (have %v)", fb, err, recs)
		}
		for _, r := range fb.Records {
			recs[r.OriginalMessageID] = r
		}
		if err := svc.CompleteFeedback(ctx, fb.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	if recs["led-on"].StatusCode != iothub.StatusSuccess || recs["bad-pin"].StatusCode != iothub.StatusRejected ||
		recs["bad-pin"].Reason != "pin 99 not configured" {
		t.Fatalf("feedback records %+v", recs)
	}

	// Metrics over HTTPS.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.caPool()}}}
	resp, err := hc.Get("https://" + p.ep.HTTPS + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"c2d_messages_sent_total 2", `c2d_messages_settled_total{outcome="Rejected"} 1`,
		`c2d_messages_settled_total{outcome="Success"} 1`, "c2d_devices_connected 1", "c2d_mqtt_sessions 1"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// An unknown policy is a clear error.
	if out, err := exec.Command(hubBin, "connection-string", "--data", data, "--policy", "nope").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), `no such shared access policy "nope"`) || !strings.Contains(string(out), "service") {
		t.Errorf("connection-string --policy nope: %v %s", err, out)
	}
	// A second hub on the same data directory refuses to start (and leaves the first one alone).
	second := exec.Command(hubBin, append([]string{"serve", "--data", data}, loopback...)...)
	if out, err := second.CombinedOutput(); err == nil {
		t.Errorf("a second hub started on the same data directory:\n%s", out)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("first hub unhealthy after the second one's attempt: %v", err)
	}
	if ep, err := server.ReadEndpoints(data); err != nil || ep.PID != p.cmd.Process.Pid {
		t.Fatalf("endpoints.json after the second hub's attempt: %+v, %v", ep, err)
	}

	// A long-poll in progress does not hold up shutdown.
	pollDone := make(chan error, 1)
	go func() {
		_, err := svc.ReceiveFeedback(ctx, time.Minute)
		pollDone <- err
	}()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\nstderr:\n%s", code, p.stderr.String())
	}
	select {
	case <-pollDone:
	case <-time.After(10 * time.Second):
		t.Fatal("feedback long-poll still open after the hub exited")
	}
	if _, err := os.Stat(filepath.Join(data, server.EndpointsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("endpoints.json left after a clean stop: %v", err)
	}
	if !strings.Contains(p.stderr.String(), "shutting down") {
		t.Fatalf("no shutdown log:\n%s", p.stderr.String())
	}
}

// Flags override the config file, which overrides the defaults.
func TestFlagsOverrideConfig(t *testing.T) {
	data := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "hub.yaml")
	body := "hostname: from-config.example\nlisten:\n  mqtt: \"off\"\n  mqtts: \"off\"\n  http: \"off\"\n  https: 127.0.0.1:0\nlog:\n  format: json\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, data, nil, "--data", data, "--config", cfg, "--hostname", "from-flag.example", "--http", "127.0.0.1:0", "--amqps", "off")
	if p.ep.HostName != "from-flag.example" {
		t.Errorf("hostname %q: the flag must win over the file", p.ep.HostName)
	}
	if p.ep.HTTP == "" || p.ep.HTTPS == "" || p.ep.MQTT != "" || p.ep.MQTTS != "" {
		t.Errorf("endpoints %+v: want http (flag) and https (file), no MQTT (file)", p.ep)
	}
	// The log line may reach the pipe after endpoints.json is written: wait for it, bounded.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.stderr.String(), `"msg":"listening"`); {
		if time.Now().After(deadline) {
			t.Fatalf("log.format json from the file not applied:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the process's log, with a deadline
	}
	// The generated certificate carries the flag's host name.
	conn, err := tls.Dial("tcp", p.ep.HTTPS, &tls.Config{RootCAs: p.caPool(), ServerName: "from-flag.example"})
	if err != nil {
		t.Fatalf("TLS for the --hostname name: %v", err)
	}
	conn.Close()
	// connection-string uses the running hub's host name.
	if cs := p.connectionString("service"); cs.HostName != "from-flag.example" {
		t.Errorf("connection-string HostName %q", cs.HostName)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}
}
