package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/testproc"
	"github.com/c2d-project/c2d/service-cli/cli"
)

func TestProvisioning(t *testing.T) {
	p1, p2 := uniq("prov-1"), uniq("prov-2")
	// Text output names the device and hides its keys.
	r := must(t, 0, "device", "create", p1)
	for _, want := range []string{p1, "enabled", "Disconnected", "**** (hidden; --show-keys to print)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("device create output lacks %q:\n%s", want, r)
		}
	}

	// JSON: Azure's device shape, keys masked unless --show-keys.
	var dev iothub.Device
	jsonOut(t, &dev, 0, "device", "show", p1)
	if dev.DeviceID != p1 || dev.Status != iothub.DeviceEnabled || dev.ConnectionState != "Disconnected" ||
		dev.Authentication.Type != "sas" || dev.Authentication.SymmetricKey.PrimaryKey != "****" ||
		dev.Authentication.SymmetricKey.SecondaryKey != "****" || dev.ETag == "" || dev.GenerationID == "" {
		t.Errorf("device show -o json = %+v", dev)
	}
	raw := jsonFields(t, must(t, 0, "device", "show", p1, "-o", "json").stdout)
	for _, k := range []string{"deviceId", "generationId", "etag", "status", "connectionState", "cloudToDeviceMessageCount", "authentication"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("device JSON lacks Azure's field %q: %v", k, keys(raw))
		}
	}
	var keyed iothub.Device
	jsonOut(t, &keyed, 0, "device", "show", p1, "--show-keys")
	pk := keyed.Authentication.SymmetricKey.PrimaryKey
	if b, err := base64.StdEncoding.DecodeString(pk); err != nil || len(b) < 16 {
		t.Fatalf("--show-keys primary key %q is not a base64 key", pk)
	}

	// Explicit keys are kept; the connection string carries the hub's name and the chosen key.
	primary := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	secondary := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	must(t, 0, "device", "create", p2, "--primary-key", primary, "--secondary-key", secondary)
	cs := strings.TrimSpace(must(t, 0, "device", "connection-string", p2).stdout)
	if want := "HostName=hub.test;DeviceId=" + p2 + ";SharedAccessKey=" + primary; cs != want {
		t.Errorf("connection-string = %q, want %q", cs, want)
	}
	cs2 := strings.TrimSpace(must(t, 0, "device", "connection-string", p2, "--secondary").stdout)
	if !strings.HasSuffix(cs2, "SharedAccessKey="+secondary) {
		t.Errorf("connection-string --secondary = %q", cs2)
	}
	var csj map[string]string
	jsonOut(t, &csj, 0, "device", "connection-string", p2)
	if csj["deviceId"] != p2 || csj["connectionString"] != "HostName=hub.test;DeviceId="+p2+";SharedAccessKey="+primary {
		t.Errorf("connection-string -o json = %v", csj)
	}

	// A second create of the same id is refused with advice.
	r = must(t, 1, "device", "create", p2)
	if !strings.Contains(r.stderr, p2) || !strings.Contains(r.stderr, "c2d device show "+p2) {
		t.Errorf("duplicate create: %s", r)
	}

	// Disable / enable round trip, visible in list.
	must(t, 0, "device", "disable", p2)
	var list []iothub.Device
	jsonOut(t, &list, 0, "device", "list")
	got := map[string]iothub.Device{}
	for _, d := range list {
		got[d.DeviceID] = d
		if d.Authentication.SymmetricKey.PrimaryKey != "" && d.Authentication.SymmetricKey.PrimaryKey != "****" {
			t.Errorf("device list leaks %s's key", d.DeviceID)
		}
	}
	if got[p1].Status != iothub.DeviceEnabled || got[p2].Status != iothub.DeviceDisabled {
		t.Errorf("device list statuses: %q, %q", got[p1].Status, got[p2].Status)
	}
	r = must(t, 0, "device", "enable", p2)
	if !strings.Contains(r.stdout, p2+" is enabled") {
		t.Errorf("enable: %s", r)
	}
	if r := must(t, 0, "device", "list"); !strings.Contains(r.stdout, "DEVICE ID") || !strings.Contains(r.stdout, p2) {
		t.Errorf("device list table: %s", r)
	}

	// Delete, then the device is gone with a pointer to device list.
	must(t, 0, "device", "delete", p2)
	r = must(t, 9, "device", "show", p2)
	if !strings.Contains(r.stderr, `"`+p2+`"`) || !strings.Contains(r.stderr, "c2d device list") {
		t.Errorf("show deleted device: %s", r)
	}
}

// Every send option reaches the hub's queue (queue show, field by field) and a real device (its
// property bag and body).
func TestSendEveryOption(t *testing.T) {
	id := newDevice(t, "send-all")
	body := []byte(`{"job":42,"steps":["a","b"]}`)
	file := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	var sent map[string]json.RawMessage
	jsonOut(t, &sent, 0, "send", id, "--data-file", file, "--prop", "first=1", "--props", "led=on;blink=3", "--prop", "last=x.y",
		"--mid", "job-42", "--cid", "batch-9", "--uid", "operator", "--content-type", "application/json",
		"--content-encoding", "utf-8", "--ack", "positive", "--expiry", "10m")
	if str(t, sent, "deviceId") != id || str(t, sent, "messageId") != "job-42" || str(t, sent, "correlationId") != "batch-9" ||
		str(t, sent, "ack") != "positive" || num(t, sent, "sequenceNumber") < 1 {
		t.Errorf("send -o json = %s", mustMarshal(sent))
	}
	exp, err := time.Parse(time.RFC3339Nano, str(t, sent, "expiryTimeUtc"))
	if err != nil || exp.Before(before.Add(10*time.Minute-time.Second)) || exp.After(time.Now().Add(10*time.Minute+time.Second)) {
		t.Errorf("expiryTimeUtc %s, want about now+10m", exp)
	}
	if _, ok := sent["statusCode"]; ok {
		t.Errorf("send without --wait reports an outcome: %s", mustMarshal(sent))
	}

	// A second message: body from --data, absolute expiry, generated message id.
	abs := time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)
	r := must(t, 0, "send", id, "--data", "hello", "--expiry", abs.Format(time.RFC3339))
	mid2 := strings.TrimSpace(r.stdout)
	if len(mid2) != 36 || strings.Count(mid2, "-") != 4 {
		t.Errorf("send prints %q, want a UUID message id only", r.stdout)
	}

	var q []iothub.MessageStatus
	jsonOut(t, &q, 0, "queue", "show", id)
	if len(q) != 2 {
		t.Fatalf("queue show: %d messages, want 2: %+v", len(q), q)
	}
	m := q[0]
	wantProps := []iothub.AppProperty{{Name: "first", Value: "1"}, {Name: "led", Value: "on"}, {Name: "blink", Value: "3"}, {Name: "last", Value: "x.y"}}
	if m.MessageID != "job-42" || m.CorrelationID != "batch-9" || m.DeviceID != id || m.State != iothub.StateEnqueued ||
		m.DeliveryCount != 0 || m.Ack != iothub.AckPositive || !m.ExpiryTimeUTC.Equal(exp) || m.Outcome != "" ||
		!reflect.DeepEqual(m.Properties, wantProps) {
		t.Errorf("queue show [0] = %+v", m)
	}
	if q[1].MessageID != mid2 || !q[1].ExpiryTimeUTC.Equal(abs) || q[1].Ack != iothub.AckNone || q[1].SequenceNumber <= m.SequenceNumber {
		t.Errorf("queue show [1] = %+v (want expiry %s)", q[1], abs)
	}
	if r := must(t, 0, "queue", "show", id); !strings.Contains(r.stdout, "job-42") || !strings.Contains(r.stdout, "first=1;led=on;blink=3;last=x.y") {
		t.Errorf("queue show table: %s", r)
	}

	// The device receives exactly what was sent, in order, and its PUBACK completes each.
	d := connectDevice(t, id, false)
	got := d.next(t)
	gm := got.msg
	if gm.MessageID != "job-42" || gm.CorrelationID != "batch-9" || gm.UserID != "operator" || gm.ContentType != "application/json" ||
		gm.ContentEncoding != "utf-8" || gm.Ack != iothub.AckPositive || !gm.ExpiryTime.Equal(exp) ||
		!reflect.DeepEqual(gm.Properties, wantProps) || string(got.body) != string(body) {
		t.Errorf("device received %+v body %q (topic %s)", gm, got.body, got.topic)
	}
	got2 := d.next(t)
	if got2.msg.MessageID != mid2 || string(got2.body) != "hello" || !got2.msg.ExpiryTime.Equal(abs) {
		t.Errorf("device received second %+v body %q", got2.msg, got2.body)
	}
	eventually(t, 10*time.Second, "queue empties after the device's PUBACKs", func() bool {
		var q []iothub.MessageStatus
		jsonOut(t, &q, 0, "queue", "show", id)
		return len(q) == 0
	})
	if r := must(t, 0, "queue", "show", id); !strings.Contains(r.stdout, "No pending messages for "+id) {
		t.Errorf("empty queue text: %s", r)
	}
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// waitJSON runs send --wait -o json and returns the result object.
func waitJSON(t *testing.T, code int, args ...string) map[string]json.RawMessage {
	t.Helper()
	r := must(t, code, append(append([]string{"send"}, args...), "-o", "json")...)
	return jsonFields(t, r.stdout)
}

func TestWaitSuccess(t *testing.T) {
	id := newDevice(t, "wait-ok")
	connectDevice(t, id, false) // PUBACK completes
	out := waitJSON(t, 0, id, "--prop", "led=on", "--mid", "ok-1", "--wait", "20s")
	if str(t, out, "statusCode") != "Success" || str(t, out, "messageId") != "ok-1" || str(t, out, "deviceId") != id ||
		str(t, out, "ack") != "full" || str(t, out, "state") != "Completed" || num(t, out, "deliveryCount") != 1 {
		t.Errorf("send --wait success: %s", mustMarshal(out))
	}
	// Text: the message id, then the outcome.
	r := must(t, 0, "send", id, "--prop", "led=off", "--mid", "ok-2", "--wait", "20s")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || lines[0] != "ok-2" || !strings.HasPrefix(lines[1], "Success: "+id+" completed message ok-2") {
		t.Errorf("send --wait text: %s", r)
	}
	if r.stderr != "" {
		t.Errorf("send --wait on a pipe writes to stderr (no spinner expected): %q", r.stderr)
	}
}

func TestWaitRejected(t *testing.T) {
	id := newDevice(t, "wait-reject")
	d := connectDevice(t, id, true)
	go func() {
		for i := 0; i < 2; i++ {
			select {
			case m := <-d.msgs:
				d.reject(t, m, "no output named led9")
			case <-time.After(30 * time.Second):
				return
			}
		}
	}()
	out := waitJSON(t, 3, id, "--prop", "led9=on", "--wait", "20s")
	if str(t, out, "statusCode") != "Rejected" || str(t, out, "reason") != "no output named led9" || str(t, out, "state") != "DeadLettered" {
		t.Errorf("send --wait rejected: %s", mustMarshal(out))
	}
	r := must(t, 3, "send", id, "--prop", "led9=off", "--wait", "20s")
	if !strings.Contains(r.stdout, "Rejected: "+id+" rejected message") || !strings.Contains(r.stdout, "no output named led9") {
		t.Errorf("send --wait rejected text: %s", r)
	}
}

func TestWaitExpired(t *testing.T) {
	id := newDevice(t, "wait-expire") // never connects
	out := waitJSON(t, 4, id, "--prop", "a=1", "--expiry", "1s", "--wait", "20s")
	if str(t, out, "statusCode") != "Expired" || num(t, out, "deliveryCount") != 0 {
		t.Errorf("send --wait expired: %s", mustMarshal(out))
	}
}

func TestWaitDeliveryCountExceeded(t *testing.T) {
	id := newDevice(t, "wait-dce")
	connectDevice(t, id, true) // extension: PUBACK does not settle, and the device never settles
	out := waitJSON(t, 5, id, "--prop", "a=1", "--wait", "30s")
	if str(t, out, "statusCode") != "DeliveryCountExceeded" || num(t, out, "deliveryCount") != 2 {
		t.Errorf("send --wait delivery count exceeded: %s", mustMarshal(out))
	}
}

func TestWaitPurged(t *testing.T) {
	id := newDevice(t, "wait-purge")
	w := start(t, "send", id, "--prop", "a=1", "--mid", "purge-me", "--wait", "30s", "-o", "json")
	eventually(t, 10*time.Second, "message queued", func() bool {
		var q []iothub.MessageStatus
		jsonOut(t, &q, 0, "queue", "show", id)
		return len(q) == 1 && q[0].MessageID == "purge-me"
	})
	var pr iothub.PurgeResult
	jsonOut(t, &pr, 0, "queue", "purge", id)
	if pr.DeviceID != id || pr.TotalMessagesPurged != 1 {
		t.Errorf("queue purge -o json = %+v", pr)
	}
	r := w.wait(t)
	if r.code != 6 {
		t.Fatalf("send --wait during purge: want exit 6, got %s", r)
	}
	if out := jsonFields(t, r.stdout); str(t, out, "statusCode") != "Purged" || str(t, out, "messageId") != "purge-me" {
		t.Errorf("purged outcome: %s", r.stdout)
	}
	if r := must(t, 0, "queue", "purge", id); !strings.Contains(r.stdout, "Purged 0 message(s) from "+id) {
		t.Errorf("purge text: %s", r)
	}
}

func TestWaitTimeout(t *testing.T) {
	id := newDevice(t, "wait-timeout")
	start := time.Now()
	out := waitJSON(t, 7, id, "--prop", "a=1", "--mid", "slow-1", "--wait", "1s")
	if time.Since(start) < time.Second {
		t.Errorf("send --wait 1s returned after %s", time.Since(start))
	}
	if string(out["timedOut"]) != "true" || str(t, out, "state") != "Enqueued" || str(t, out, "messageId") != "slow-1" {
		t.Errorf("send --wait timeout: %s", mustMarshal(out))
	}
	if _, ok := out["statusCode"]; ok {
		t.Errorf("timeout reports a statusCode: %s", mustMarshal(out))
	}
	r := must(t, 7, "send", id, "--prop", "a=2", "--wait", "500ms")
	if !strings.Contains(r.stdout, "Timeout: no outcome for message") || !strings.Contains(r.stdout, "c2d queue show "+id) {
		t.Errorf("timeout text: %s", r)
	}
}

// Feedback: records of messages sent with an ack are received, printed and completed once; waiting
// with send --wait does not consume them.
func TestFeedback(t *testing.T) {
	id := newDevice(t, "fb-1")
	connectDevice(t, id, false)
	follow := start(t, "feedback", "--follow", "-o", "json", "--device", id)

	// The waiter sees Success, and the follower still gets the feedback record.
	waitJSON(t, 0, id, "--prop", "a=1", "--mid", "fb-msg-1", "--wait", "20s")
	var rec iothub.FeedbackRecord
	eventually(t, 20*time.Second, "feedback --follow prints the record of fb-msg-1", func() bool {
		for _, l := range strings.Split(follow.stdout.String(), "\n") {
			if l == "" {
				continue
			}
			var r iothub.FeedbackRecord
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("feedback --follow line %q is not one JSON record: %v", l, err)
			}
			if r.DeviceID != id {
				t.Fatalf("feedback --follow --device %s printed %+v", id, r)
			}
			if r.OriginalMessageID == "fb-msg-1" {
				rec = r
				return true
			}
		}
		return false
	})
	if rec.StatusCode != iothub.StatusSuccess || rec.EnqueuedTimeUTC.IsZero() || rec.Description == "" {
		t.Errorf("feedback record %+v", rec)
	}
	_ = follow.cmd.Process.Signal(syscall.SIGINT)
	if r := follow.wait(t); r.code != 0 {
		t.Errorf("feedback --follow after SIGINT: want exit 0, got %s", r)
	} else if !strings.Contains(r.stderr, "records of devices other than "+id+" are consumed without being shown") {
		t.Errorf("feedback --follow --device does not warn that it consumes other devices' records: %q", r.stderr)
	}

	// Drain mode: a record is printed once, then it is gone.
	must(t, 0, "send", id, "--prop", "a=2", "--mid", "fb-msg-2", "--ack", "positive")
	var recs []iothub.FeedbackRecord
	eventually(t, 15*time.Second, "feedback record for fb-msg-2", func() bool {
		var got []iothub.FeedbackRecord
		jsonOut(t, &got, 0, "feedback", "--wait", "2s")
		recs = append(recs, got...)
		for _, r := range got {
			if r.OriginalMessageID == "fb-msg-2" {
				return true
			}
		}
		return false
	})
	var again []iothub.FeedbackRecord
	jsonOut(t, &again, 0, "feedback")
	for _, r := range again {
		if r.OriginalMessageID == "fb-msg-2" || r.OriginalMessageID == "fb-msg-1" {
			t.Errorf("feedback completed records came back: %+v", r)
		}
	}
	if r := must(t, 0, "feedback"); !strings.Contains(r.stdout, "No feedback waiting.") && !strings.Contains(r.stdout, "STATUS") {
		t.Errorf("feedback text: %s", r)
	}
}

func TestErrors(t *testing.T) {
	id := newDevice(t, "err-1")
	wrongKey := strings.Replace(hub.Owner.String(), "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	http := "C2D_ENDPOINT=http://" + hub.Endpoints.HTTP
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		errs []string // substrings of stderr
	}{
		{"no credentials", []string{http}, []string{"device", "list"}, 2, []string{"--connection-string", "C2D_CONNECTION_STRING"}},
		{"malformed connection string", []string{http, "C2D_CONNECTION_STRING=HostName=x;Bogus=1"}, []string{"device", "list"}, 2, []string{"Bogus", "HostName=...;SharedAccessKeyName="}},
		{"wrong key", []string{http, "C2D_CONNECTION_STRING=" + wrongKey}, []string{"device", "list"}, 8, []string{"unauthorized", "c2d-hub connection-string"}},
		{"unreachable", []string{"C2D_CONNECTION_STRING=" + hub.Owner.String(), "C2D_ENDPOINT=http://127.0.0.1:1"}, []string{"device", "list"}, 10, []string{"127.0.0.1:1", "C2D_ENDPOINT"}},
		{"self-signed without --ca-file", []string{"C2D_CONNECTION_STRING=" + hub.Owner.String(), "C2D_ENDPOINT=https://" + hub.Endpoints.HTTPS}, []string{"hub", "status"}, 10, []string{"--ca-file"}},
		{"missing ID", nil, []string{"send"}, 2, []string{"send takes 1 argument"}},
		{"unknown command", nil, []string{"devices"}, 2, []string{"unknown command"}},
		{"unknown flag", nil, []string{"send", id, "--priority", "1"}, 2, []string{"--priority"}},
		{"bad ack", nil, []string{"send", id, "--ack", "sometimes"}, 2, []string{"--ack", "none, positive, negative or full"}},
		{"bad expiry", nil, []string{"send", id, "--expiry", "tomorrow"}, 2, []string{"--expiry"}},
		{"past expiry", nil, []string{"send", id, "--expiry", "2020-01-01T00:00:00Z"}, 2, []string{"in the past"}},
		{"prop without =", nil, []string{"send", id, "--prop", "led"}, 2, []string{"no '='"}},
		{"prop with a space", nil, []string{"send", id, "--prop", "note=hello world"}, 2, []string{"message not sent", "note"}},
		{"reserved prop", nil, []string{"send", id, "--prop", "iothub-ack=full"}, 2, []string{"reserved"}},
		{"data and data-file", nil, []string{"send", id, "--data", "x", "--data-file", "f"}, 2, []string{"data"}},
		{"bad device id", nil, []string{"device", "show", "bad/id"}, 2, []string{"bad/id"}},
		{"bad output", nil, []string{"device", "list", "-o", "yaml"}, 2, []string{"text or json"}},
		{"unknown device", nil, []string{"send", "nobody-here", "--prop", "a=1"}, 9, []string{`"nobody-here"`, "c2d device list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := hubEnv()
			if tc.env != nil {
				env = append(baseEnv(), tc.env...)
			}
			r := runEnv(t, env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("want exit %d, got %s", tc.code, r)
			}
			if r.stdout != "" {
				t.Errorf("an error printed to stdout: %q", r.stdout)
			}
			for _, e := range tc.errs {
				if !strings.Contains(r.stderr, e) {
					t.Errorf("stderr lacks %q: %s", e, r.stderr)
				}
			}
			if tc.name == "bad output" {
				return // -o json would override the bad -o
			}
			// The same failure in JSON mode is one JSON object on stderr.
			r = runEnv(t, env, append(tc.args, "-o", "json")...)
			if r.code != tc.code {
				t.Fatalf("-o json: want exit %d, got %s", tc.code, r)
			}
			var ej struct {
				Error    string `json:"error"`
				Code     string `json:"code"`
				ExitCode int    `json:"exitCode"`
			}
			if err := json.Unmarshal([]byte(r.stderr), &ej); err != nil || ej.Error == "" || ej.Code == "" || ej.ExitCode != tc.code {
				t.Errorf("-o json stderr is not an error object: %v: %q", err, r.stderr)
			}
		})
	}

	// A policy without the right: exit 8 and the policies that have it.
	reg, err := connectionString(hub, "registryRead")
	if err != nil {
		t.Fatal(err)
	}
	r := runEnv(t, append(baseEnv(), "C2D_CONNECTION_STRING="+reg, "C2D_ENDPOINT=http://"+hub.Endpoints.HTTP), "send", id, "--prop", "a=1")
	if r.code != 8 || !strings.Contains(r.stderr, "ServiceConnect") || !strings.Contains(r.stderr, "'service' or 'iothubowner'") {
		t.Errorf("registryRead policy sending: %s", r)
	}
	// ...while it may read the registry.
	if r := runEnv(t, append(baseEnv(), "C2D_CONNECTION_STRING="+reg, "C2D_ENDPOINT=http://"+hub.Endpoints.HTTP), "device", "show", id); r.code != 0 {
		t.Errorf("registryRead policy device show: %s", r)
	}

	// Queue full (the test hub allows 5): exit 1 with the way out.
	for i := 0; i < 5; i++ {
		must(t, 0, "send", id, "--prop", "n="+string(rune('0'+i)))
	}
	r = must(t, 1, "send", id, "--prop", "n=6")
	if !strings.Contains(r.stderr, "c2d queue purge "+id) || !strings.Contains(r.stderr, id) {
		t.Errorf("queue full: %s", r)
	}
	var ej map[string]any
	r = must(t, 1, "send", id, "--prop", "n=6", "-o", "json")
	if err := json.Unmarshal([]byte(r.stderr), &ej); err != nil || ej["code"] != "DeviceMaximumQueueDepthExceeded" || ej["deviceId"] != id {
		t.Errorf("queue full JSON error: %s", r.stderr)
	}
}

func TestTLSAndHubStatus(t *testing.T) {
	env := append(baseEnv(), "C2D_CONNECTION_STRING="+hub.Owner.String(), "C2D_ENDPOINT=https://"+hub.Endpoints.HTTPS)
	r := runEnv(t, append(env, "C2D_CA_FILE="+hub.Endpoints.CA), "hub", "status", "-o", "json")
	if r.code != 0 {
		t.Fatalf("hub status over HTTPS with the hub's CA: %s", r)
	}
	st := jsonFields(t, r.stdout)
	if str(t, st, "endpoint") != "https://"+hub.Endpoints.HTTPS || str(t, st, "hostName") != "hub.test" ||
		string(st["reachable"]) != "true" || string(st["healthy"]) != "true" || str(t, st, "version") == "" ||
		num(t, st, "totalDeviceCount") < 1 {
		t.Errorf("hub status -o json: %s", r.stdout)
	}
	for _, k := range []string{"connectedDeviceCount", "enabledDeviceCount", "queuedMessageCount", "pendingFeedbackCount", "extensionDispositions"} {
		if _, ok := st[k]; !ok {
			t.Errorf("hub status JSON lacks %q", k)
		}
	}
	// The flag works as well as the variable.
	if r := runEnv(t, env, "--ca-file", hub.Endpoints.CA, "hub", "status"); r.code != 0 || !strings.Contains(r.stdout, "Health:") || !strings.Contains(r.stdout, "ok") {
		t.Errorf("hub status --ca-file: %s", r)
	}
}

func TestCompletionAndHelp(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := runEnv(t, baseEnv(), "completion", sh); r.code != 0 || !strings.Contains(r.stdout, "c2d") {
			t.Errorf("completion %s: %s", sh, r)
		}
	}
	r := runEnv(t, baseEnv(), "send", "--help")
	if r.code != 0 {
		t.Errorf("send --help: %s", r)
	}
	for _, want := range []string{"Exit codes:", "3  Rejected", "7  Timeout", "--wait", "--props"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("send --help lacks %q", want)
		}
	}
	// Device ids complete from the hub.
	cm := newDevice(t, "complete-me")
	r = runEnv(t, hubEnv(), "__complete", "queue", "show", "complete-me")
	if !strings.Contains(r.stdout, cm) {
		t.Errorf("device id completion: %s", r)
	}
}

// On a terminal, send --wait shows that it is waiting (and erases the line); the process-level
// tests above prove that a pipe gets nothing.
func TestWaitSpinnerOnTerminal(t *testing.T) {
	id := newDevice(t, "spin-1")
	var stdout, stderr testproc.SyncBuffer
	env := map[string]string{"C2D_CONNECTION_STRING": hub.Owner.String(), "C2D_ENDPOINT": "http://" + hub.Endpoints.HTTP}
	code := cli.Main(context.Background(), []string{"send", id, "--prop", "a=1", "--wait", "700ms"}, cli.Env{
		Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }, StderrIsTerminal: true,
	})
	if code != cli.ExitTimeout {
		t.Fatalf("exit %d, want %d; stderr %q", code, cli.ExitTimeout, stderr.String())
	}
	se := stderr.String()
	if !strings.Contains(se, "waiting for "+id+" to settle message") || !strings.HasSuffix(se, "\r\033[K") {
		t.Errorf("terminal stderr %q: want the spinner line, erased at the end", se)
	}
	if !strings.Contains(stdout.String(), "Timeout: ") {
		t.Errorf("stdout %q", stdout.String())
	}
}

// Ctrl-C while waiting: exit 130, and the message stays queued.
func TestWaitInterrupted(t *testing.T) {
	id := newDevice(t, "wait-int")
	w := start(t, "send", id, "--prop", "a=1", "--mid", "int-1", "--wait", "30s")
	eventually(t, 10*time.Second, "message queued", func() bool {
		var q []iothub.MessageStatus
		jsonOut(t, &q, 0, "queue", "show", id)
		return len(q) == 1
	})
	_ = w.cmd.Process.Signal(syscall.SIGINT)
	r := w.wait(t)
	if r.code != 130 || !strings.Contains(r.stderr, "interrupted while waiting for message int-1") || !strings.Contains(r.stderr, "c2d queue show "+id) {
		t.Errorf("SIGINT during --wait: %s", r)
	}
	var q []iothub.MessageStatus
	jsonOut(t, &q, 0, "queue", "show", id)
	if len(q) != 1 || q[0].MessageID != "int-1" {
		t.Errorf("after the interrupted wait the queue is %+v", q)
	}
}

// feedback --device (no --follow) shows one device's records and loses nobody else's.
func TestFeedbackDeviceFilterKeepsOthers(t *testing.T) {
	a, b := newDevice(t, "fbf-a"), newDevice(t, "fbf-b")
	connectDevice(t, a, false)
	connectDevice(t, b, false)
	waitJSON(t, 0, a, "--prop", "x=1", "--mid", "fbf-a-1", "--ack", "positive", "--wait", "20s")
	waitJSON(t, 0, b, "--prop", "x=1", "--mid", "fbf-b-1", "--ack", "positive", "--wait", "20s")
	seen := func(recs []iothub.FeedbackRecord, mid string) bool {
		for _, r := range recs {
			if r.OriginalMessageID == mid {
				return true
			}
		}
		return false
	}
	eventually(t, 15*time.Second, "fbf-a's record through --device", func() bool {
		var recs []iothub.FeedbackRecord
		jsonOut(t, &recs, 0, "feedback", "--device", a, "--wait", "1s")
		for _, r := range recs {
			if r.DeviceID != a {
				t.Fatalf("feedback --device %s printed %+v", a, r)
			}
		}
		return seen(recs, "fbf-a-1")
	})
	// fbf-b's record was not consumed by the filtered reader.
	eventually(t, 15*time.Second, "fbf-b's record still there for everyone", func() bool {
		var recs []iothub.FeedbackRecord
		jsonOut(t, &recs, 0, "feedback", "--wait", "1s")
		return seen(recs, "fbf-b-1")
	})
}

// The body can come from stdin.
func TestSendDataFromStdin(t *testing.T) {
	id := newDevice(t, "stdin-1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := c2dCmd(ctx, hubEnv(), "send", id, "--data-file", "-", "--mid", "stdin-msg")
	cmd.Stdin = strings.NewReader("from a pipe")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "stdin-msg" {
		t.Fatalf("send --data-file -: %v: %s", err, out)
	}
	d := connectDevice(t, id, false)
	if got := d.next(t); got.msg.MessageID != "stdin-msg" || string(got.body) != "from a pipe" {
		t.Errorf("device got %+v body %q", got.msg, got.body)
	}
}

// A hub that goes away during --wait: a waiter whose time runs out while the hub is gone says the
// outcome is unknown (exit 10, not a timeout); one with time left carries on once the hub is back.
func TestWaitAcrossHubRestart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "hub2")
	h, err := startHub(data, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := h.Endpoints.HTTP
	env := append(baseEnv(), "C2D_CONNECTION_STRING="+h.Owner.String(), "C2D_ENDPOINT=http://"+httpAddr)
	if r := runEnv(t, env, "device", "create", "restart-1"); r.code != 0 {
		t.Fatalf("create: %s", r)
	}
	short := startEnv(t, env, "send", "restart-1", "--prop", "a=1", "--mid", "short", "--wait", "3s")
	long := startEnv(t, env, "send", "restart-1", "--prop", "a=2", "--mid", "long", "--wait", "40s")
	eventually(t, 10*time.Second, "both messages queued", func() bool {
		var q []iothub.MessageStatus
		r := runEnv(t, append(env, "C2D_OUTPUT=json"), "queue", "show", "restart-1")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &q) == nil && len(q) == 2
	})
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	r := short.wait(t)
	if r.code != 10 || !strings.Contains(r.stderr, "outcome is unknown") || !strings.Contains(r.stderr, "c2d queue show restart-1") {
		t.Errorf("waiter that ran out of time while the hub was down: %s", r)
	}
	h, err = startHub(data, httpAddr) // same data, same API address
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	if r := runEnv(t, env, "queue", "purge", "restart-1"); r.code != 0 || !strings.Contains(r.stdout, "Purged 2 message(s)") {
		t.Fatalf("purge after restart: %s", r)
	}
	if r := long.wait(t); r.code != 6 || !strings.Contains(r.stdout, "Purged: message long") {
		t.Errorf("waiter across the restart: %s", r)
	}
}
