package azureinterop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/testproc"
)

// Tested with (keep in step with testdata/sdk-device/package-lock.json):
//
//	azure-iot-device      1.18.4  (Client, SharedAccessKey and SharedAccessSignature auth)
//	azure-iot-device-mqtt 1.16.4  (transports Mqtt: mqtts://, and MqttWs: wss://…/$iothub/websocket)
//	mqtt (mqtt.js)        4.3.8   (pulled in by azure-iot-mqtt-base)
//	azure-iothub and azure-iot-device-amqp: see serviceSDK (service_test.go)
const (
	sdkVersion          = "1.18.4"
	sdkTransportVersion = "1.16.4"
)

var (
	hubBin  string // c2d-hub built for this run
	nodeDir string // temp dir holding device.js and the SDK's node_modules
	svcDir  string // temp dir holding service.js and the service SDK's node_modules
	nodeBin string
)

// TestMain builds c2d-hub and installs the SDK once: `npm ci` from the committed lock file into a
// temporary copy of testdata/sdk-device, so the source tree never grows a node_modules.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if nodeBin, err = exec.LookPath("node"); err != nil {
		fmt.Fprintln(os.Stderr, "azureinterop: node not found: install Node.js and npm (Debian packages: nodejs npm)")
		return 1
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		fmt.Fprintln(os.Stderr, "azureinterop: npm not found: install Node.js and npm (Debian packages: nodejs npm)")
		return 1
	}
	tmp, err := os.MkdirTemp("", "c2d-azureinterop")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)

	hubBin = filepath.Join(tmp, "c2d-hub")
	if err := testproc.Build(tmp, nil, "github.com/c2d-project/c2d/cloud/cmd/c2d-hub"); err != nil {
		fmt.Fprintf(os.Stderr, "azureinterop: build c2d-hub: %v\n", err)
		return 1
	}

	nodeDir, svcDir = filepath.Join(tmp, "sdk-device"), filepath.Join(tmp, "sdk-service")
	started := time.Now()
	installs := []struct {
		dir, src string
		scripts  []string
		want     map[string]string
	}{
		{nodeDir, "sdk-device", []string{"device.js"}, map[string]string{"azure-iot-device": sdkVersion, "azure-iot-device-mqtt": sdkTransportVersion}},
		{svcDir, "sdk-service", []string{"service.js", "service-limits.js", "twin-service.js"}, serviceSDK},
	}
	errs := make([]error, len(installs))
	var wg sync.WaitGroup
	for i, in := range installs { // in parallel: each is mostly waiting for the registry
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = npmCI(npm, in.dir, in.src, in.scripts, in.want)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(os.Stderr, "azureinterop:", err)
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "azureinterop: npm ci took %s\n", time.Since(started).Round(time.Millisecond))
	return m.Run()
}

// npmCI copies testdata/src (package.json, lock file, script) to dir and runs `npm ci` there; the
// lock file is what we claim to have tested, so the installed versions are checked against want.
func npmCI(npm, dir, src string, scripts []string, want map[string]string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for _, f := range append([]string{"package.json", "package-lock.json"}, scripts...) {
		b, err := os.ReadFile(filepath.Join("testdata", src, f))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		if err != nil {
			return err
		}
	}
	install := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s (needs the npm registry): %v\n%s", dir, err, out)
	}
	for pkg, v := range want {
		var pj struct{ Version string }
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
		if err == nil {
			err = json.Unmarshal(b, &pj)
		}
		if err != nil || pj.Version != v {
			return fmt.Errorf("%s installed %q (%v), want %s", pkg, pj.Version, err, v)
		}
	}
	return nil
}

// ---- the hub ----

// hub is a running c2d-hub serve (internal/testproc) with the helpers these tests share.
type hub struct{ *testproc.Hub }

// startHub runs `c2d-hub serve` on loopback with MQTTS and secure WebSockets on free ports and the
// HTTP API for the test and HTTPS for the service SDK; host name "localhost", so its generated
// certificate verifies for the SDKs.
func startHub(t *testing.T) *hub {
	t.Helper()
	return &hub{testproc.StartHub(t, hubBin, testproc.HubOptions{Args: []string{
		"--hostname", "localhost", "--log-level", "debug",
		"--mqtt", "127.0.0.1:0", "--mqtts", "127.0.0.1:0", "--wss", "127.0.0.1:0",
		"--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--amqps", "off"}})}
}

// createDevice registers a device with hub-generated keys.
func (h *hub) createDevice(t *testing.T, ctx context.Context, id string) iothub.Device {
	t.Helper()
	dev, err := h.Client.CreateDevice(ctx, id, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// deviceConnectionString is what `c2d device connection-string` prints, plus — for Mqtt only —
// GatewayHostName=localhost:{port}. The SDK dials mqtts://{GatewayHostName or HostName} (its
// _getBaseTransportConfig concatenates the string into the URI, so a port there is honoured) but
// signs its SAS token and names the hub in its username with HostName; the hub sees exactly what
// a device on the default port 8883 sends, and the test needs no fixed port.
func (h *hub) deviceConnectionString(dev iothub.Device, transport string) string {
	cs := iothub.DeviceConnectionString{HostName: h.Endpoints.HostName, DeviceID: dev.DeviceID,
		SharedAccessKey: dev.Authentication.SymmetricKey.PrimaryKey}
	if transport == "mqtt" {
		cs.GatewayHostName = "localhost:" + port(h.Endpoints.MQTTS)
	}
	return cs.String()
}

func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// waitConnectionState polls the registry (as `c2d device show` does) until the device's
// connectionState is want.
func (h *hub) waitConnectionState(t *testing.T, ctx context.Context, id, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		dev, err := h.Client.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if dev.ConnectionState == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: connectionState %q after 10s, want %q", id, dev.ConnectionState, want)
		}
		time.Sleep(25 * time.Millisecond) // polling the registry, with a deadline
	}
}

// settled long-polls a message's status until it is terminal.
func (h *hub) settled(t *testing.T, ctx context.Context, deviceID, messageID string) iothub.MessageStatus {
	t.Helper()
	st, err := h.Client.MessageStatus(ctx, deviceID, messageID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Outcome == "" {
		t.Fatalf("message %s not settled within 20s: %+v", messageID, st)
	}
	return st
}

// feedbackFor reads feedback batches over raw HTTP (to see Azure's field names as sent) until
// it finds the record of messageID; it completes every batch it reads through apiclient.
func (h *hub) feedbackFor(t *testing.T, ctx context.Context, messageID string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		tok, err := h.Owner.Token(time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			"http://"+h.Endpoints.HTTP+"/messages/serviceBound/feedback?wait=10s&api-version="+iothub.APIVersion, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusNoContent {
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET feedback: %s: %s", resp.Status, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, iothub.FeedbackContentType) {
			t.Errorf("feedback Content-Type %q, want %s", ct, iothub.FeedbackContentType)
		}
		var records []map[string]any
		if err := json.Unmarshal(body, &records); err != nil {
			t.Fatalf("feedback body %s: %v", body, err)
		}
		if err := h.Client.CompleteFeedback(ctx, strings.Trim(resp.Header.Get("ETag"), `"`)); err != nil {
			t.Fatal(err)
		}
		for _, r := range records {
			if r["originalMessageId"] == messageID {
				return r
			}
		}
	}
	t.Fatalf("no feedback record for %s within 20s", messageID)
	return nil
}

// metric returns the value of one sample line of the hub's /metrics, e.g.
// `c2d_device_connection_changes_total{event="connected"}`.
func (h *hub) metric(t *testing.T, ctx context.Context, sample string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.Endpoints.HTTP+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metrics: %s: %v", sc.Text(), err)
			}
			return f
		}
	}
	return 0
}

// ---- the SDK device ----

// event is one JSON line of device.js.
type event struct {
	Event           string               `json:"event"`
	MessageID       string               `json:"messageId"`
	CorrelationID   string               `json:"correlationId"`
	UserID          string               `json:"userId"`
	To              string               `json:"to"`
	ExpiryTimeUTC   string               `json:"expiryTimeUtc"`
	ExpiryParsed    string               `json:"expiryParsed"`
	ContentType     string               `json:"contentType"`
	ContentEncoding string               `json:"contentEncoding"`
	Ack             string               `json:"ack"`
	Properties      []iothub.AppProperty `json:"properties"`
	Body            []byte               `json:"body"` // base64 in JSON
	Op              string               `json:"op"`
	MethodName      string               `json:"methodName"`
	Payload         json.RawMessage      `json:"payload"`
	Desired         map[string]any       `json:"desired"`
	Reported        map[string]any       `json:"reported"`
	Delta           map[string]any       `json:"delta"`
	Outcome         string               `json:"outcome"`
	Result          string               `json:"result"`
	Error           *struct {
		Name           string `json:"name"`
		Message        string `json:"message"`
		TransportError *struct {
			Message string `json:"message"`
		} `json:"transportError"`
	} `json:"error"`
	raw string
}

type sdkDevice struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
	stderr *testproc.SyncBuffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

type deviceOpts struct {
	connectionString string
	transport        string // mqtt | mqttws
	settle           string // complete | reject | abandon | none
	tokenRenewal     string // "valid,margin" seconds, "" for the SDK's default (3600,900)
	sendEvent        bool   // send one D2C event once open
	methods          bool   // register the echo and fail direct-method handlers once open
	twin             bool   // getTwin once open; stdin lines are reported patches ("get": read again)
}

// startDevice runs device.js; it stays connected until stop closes its stdin.
func startDevice(t *testing.T, h *hub, o deviceOpts) *sdkDevice {
	t.Helper()
	d := &sdkDevice{t: t, events: make(chan event, 64), stderr: &testproc.SyncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(nodeBin, "device.js")
	d.cmd.Dir = nodeDir
	d.cmd.Env = append(os.Environ(),
		"C2D_DEVICE_CONNECTION_STRING="+o.connectionString,
		"C2D_CA_FILE="+h.Endpoints.CA,
		"C2D_TRANSPORT="+o.transport,
		"C2D_WSS_ADDR="+h.Endpoints.WSS,
		"C2D_SETTLE="+o.settle,
		"C2D_TOKEN_RENEWAL="+o.tokenRenewal)
	if o.sendEvent {
		d.cmd.Env = append(d.cmd.Env, "C2D_SEND_EVENT=1")
	}
	if o.methods {
		d.cmd.Env = append(d.cmd.Env, "C2D_METHODS=1")
	}
	if o.twin {
		d.cmd.Env = append(d.cmd.Env, "C2D_TWIN=1")
	}
	d.cmd.Stderr = d.stderr
	var err error
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			ev := event{raw: sc.Text()}
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Event: "unparsable", raw: sc.Text()}
			}
			d.events <- ev
		}
		d.err = d.cmd.Wait()
		close(d.events)
		close(d.exited)
	}()
	t.Cleanup(func() {
		_ = d.stdin.Close()
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("device.js (%s) stderr:\n%s", o.transport, d.stderr.String())
		}
	})
	return d
}

// next returns the next event, failing on timeout or exit.
func (d *sdkDevice) next(timeout time.Duration) event {
	d.t.Helper()
	select {
	case ev, ok := <-d.events:
		if !ok {
			d.t.Fatalf("device.js exited (%v) while the test waited for an event\nstderr:\n%s", d.err, d.stderr.String())
		}
		return ev
	case <-time.After(timeout):
		d.t.Fatalf("device.js: no event within %s\nstderr:\n%s", timeout, d.stderr.String())
		return event{}
	}
}

// expect returns the next event and fails unless it is kind.
func (d *sdkDevice) expect(kind string) event {
	d.t.Helper()
	ev := d.next(20 * time.Second)
	if ev.Event != kind {
		d.t.Fatalf("device.js: got %s, want a %q event", ev.raw, kind)
	}
	return ev
}

// stop takes the device offline the way an application does (client.close) and waits for exit 0.
func (d *sdkDevice) stop() {
	d.t.Helper()
	if err := d.stdin.Close(); err != nil {
		d.t.Fatal(err)
	}
	d.expect("closed")
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Fatal("device.js did not exit within 10s of client.close")
	}
	if d.err != nil {
		d.t.Fatalf("device.js: %v\nstderr:\n%s", d.err, d.stderr.String())
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
