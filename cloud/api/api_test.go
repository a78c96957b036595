package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/api"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

const hostName = "hub.test"

type env struct {
	t   *testing.T
	hub *hub.Hub
	api *api.Server
	srv *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvConfig(t, hub.Config{FeedbackInterval: 20 * time.Millisecond})
}

func newEnvConfig(t *testing.T, cfg hub.Config) *env {
	t.Helper()
	cfg.HostName = hostName
	cfg = cfg.Defaults()
	m := api.NewMetrics()
	h, err := hub.Open(context.Background(), t.TempDir(), cfg, m.HubEvents(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	a := api.New(api.Options{Hub: h, HostName: hostName, Version: "v-test", Metrics: m})
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &env{t: t, hub: h, api: a, srv: srv}
}

func (e *env) token(policy string, ttl time.Duration) string {
	e.t.Helper()
	p, ok := e.hub.Policy(policy)
	if !ok {
		e.t.Fatalf("no policy %q", policy)
	}
	cs := iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}
	tok, err := cs.Token(time.Now(), ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (a answer) err(t *testing.T) iothub.ErrorResponse {
	t.Helper()
	var er iothub.ErrorResponse
	if err := json.Unmarshal(a.body, &er); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	if er.ErrorCode.HTTPStatus() != a.code {
		t.Fatalf("status %d but errorCode %d", a.code, er.ErrorCode)
	}
	if !strings.HasPrefix(er.Message, "ErrorCode:"+er.Code+";") {
		t.Fatalf("Message %q is not Azure's ErrorCode:{Name};... form", er.Message)
	}
	return er
}

func (e *env) do(method, path, auth string, body any, hdr map[string]string) answer {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	owner := e.token("iothubowner", time.Hour)
	ownerPol, _ := e.hub.Policy("iothubowner")
	expired, err := iothub.NewSASToken(hostName, ownerPol.PrimaryKey, "iothubowner", time.Now().Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	otherKey := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	badSig, _ := iothub.NewSASToken(hostName, otherKey, "iothubowner", time.Now().Add(time.Hour))
	unknown, _ := iothub.NewSASToken(hostName, otherKey, "nobody", time.Now().Add(time.Hour))
	deviceTok, _ := iothub.NewSASToken(hostName+"/devices/d", otherKey, "", time.Now().Add(time.Hour))
	wrongHost, _ := iothub.NewSASToken("elsewhere.example", ownerPol.PrimaryKey, "iothubowner", time.Now().Add(time.Hour))
	secondary, _ := iothub.NewSASToken(hostName, ownerPol.SecondaryKey, "iothubowner", time.Now().Add(time.Hour))

	cases := []struct {
		name, method, path, auth string
		want                     []string // substrings of the detail
	}{
		{"no header", "GET", "/devices", "", []string{"no Authorization header"}},
		{"garbage", "GET", "/devices", "Bearer xyz", []string{"Authorization header"}},
		{"bad signature", "GET", "/devices", badSig, []string{"signature", "iothubowner"}},
		{"expired", "GET", "/devices", expired, []string{"expired", "clock"}},
		{"unknown policy", "GET", "/devices", unknown, []string{`unknown shared access policy "nobody"`}},
		{"device token", "GET", "/devices", deviceTok, []string{"policy tokens"}},
		{"wrong host", "GET", "/devices", wrongHost, []string{hostName}},
		{"registryRead sends", "POST", "/devices/d/messages/devicebound", e.token("registryRead", time.Hour),
			[]string{"policy 'registryRead' lacks ServiceConnect; use 'service' or 'iothubowner'"}},
		{"service writes registry", "PUT", "/devices/d", e.token("service", time.Hour),
			[]string{"policy 'service' lacks RegistryWrite; use 'registryReadWrite' or 'iothubowner'"}},
		{"device policy reads feedback", "GET", "/messages/serviceBound/feedback", e.token("device", time.Hour),
			[]string{"policy 'device' lacks ServiceConnect"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(tc.method, tc.path, tc.auth, "{}", nil)
			if a.code != http.StatusUnauthorized {
				t.Fatalf("status %d, body %s", a.code, a.body)
			}
			er := a.err(t)
			if er.ErrorCode != iothub.CodeIotHubUnauthorizedAccess || er.Code != "IotHubUnauthorizedAccess" {
				t.Fatalf("error %+v", er)
			}
			for _, w := range tc.want {
				if !strings.Contains(er.Detail, w) {
					t.Errorf("detail %q lacks %q", er.Detail, w)
				}
			}
		})
	}
	if a := e.do("GET", "/devices", owner, nil, nil); a.code != 200 {
		t.Fatalf("owner: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/devices", secondary, nil, nil); a.code != 200 {
		t.Fatalf("secondary key: %d %s", a.code, a.body)
	}
	// Statistics accept RegistryRead or ServiceConnect.
	for _, p := range []string{"registryRead", "service"} {
		if a := e.do("GET", "/statistics/service", e.token(p, time.Hour), nil, nil); a.code != 200 {
			t.Fatalf("statistics with %s: %d %s", p, a.code, a.body)
		}
	}
	// /healthz and /metrics need no token.
	for _, p := range []string{"/healthz", "/metrics"} {
		if a := e.do("GET", p, "", nil, nil); a.code != 200 {
			t.Fatalf("%s: %d %s", p, a.code, a.body)
		}
	}
}

func TestDeviceETagAndBodies(t *testing.T) {
	e := newEnv(t)
	owner := e.token("iothubowner", time.Hour)
	a := e.do("PUT", "/devices/d1?api-version=2021-04-12", owner, map[string]any{"deviceId": "d1"}, nil)
	if a.code != 200 {
		t.Fatalf("put: %d %s", a.code, a.body)
	}
	var d iothub.Device
	if err := json.Unmarshal(a.body, &d); err != nil {
		t.Fatal(err)
	}
	if d.ETag == "" || strings.Contains(d.ETag, `"`) {
		t.Fatalf("body etag %q: want set and unquoted", d.ETag)
	}
	if got := a.header.Get("ETag"); got != `"`+d.ETag+`"` {
		t.Fatalf("ETag header %q, want %q", got, `"`+d.ETag+`"`)
	}
	if d.Status != iothub.DeviceEnabled || d.Authentication.Type != "sas" || d.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created %+v", d)
	}

	d.Status = iothub.DeviceDisabled
	if a := e.do("PUT", "/devices/d1", owner, d, map[string]string{"If-Match": `"stale"`}); a.code != 412 || a.err(t).ErrorCode != iothub.CodePreconditionFailed {
		t.Fatalf("stale If-Match: %d %s", a.code, a.body)
	}
	a = e.do("PUT", "/devices/d1", owner, d, map[string]string{"If-Match": `"` + d.ETag + `"`})
	if a.code != 200 {
		t.Fatalf("If-Match current: %d %s", a.code, a.body)
	}
	if a := e.do("DELETE", "/devices/d1", owner, nil, map[string]string{"If-Match": `"` + d.ETag + `"`}); a.code != 412 {
		t.Fatalf("delete with old etag: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/devices/d1", owner, nil, nil); a.code != 200 || !strings.Contains(string(a.body), `"status":"disabled"`) {
		t.Fatalf("get: %d %s", a.code, a.body)
	}
	if a := e.do("PUT", "/devices/d1", owner, map[string]any{"deviceId": "other"}, nil); a.code != 400 || !strings.Contains(a.err(t).Detail, "deviceId") {
		t.Fatalf("mismatched id: %d %s", a.code, a.body)
	}
	if a := e.do("DELETE", "/devices/d1", owner, nil, map[string]string{"If-Match": "*"}); a.code != 204 {
		t.Fatalf("delete *: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/devices/d1", owner, nil, nil); a.code != 404 || a.err(t).ErrorCode != iothub.CodeDeviceNotFound {
		t.Fatalf("get deleted: %d %s", a.code, a.body)
	}
	// top limits the list.
	for _, id := range []string{"x", "y", "z"} {
		e.do("PUT", "/devices/"+id, owner, map[string]any{}, nil)
	}
	a = e.do("GET", "/devices?top=2", owner, nil, nil)
	var list []iothub.Device
	if err := json.Unmarshal(a.body, &list); err != nil || len(list) != 2 || list[0].DeviceID != "x" {
		t.Fatalf("top=2: %s %v", a.body, err)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	owner := e.token("iothubowner", time.Hour)
	e.do("PUT", "/devices/d", owner, map[string]any{}, nil)
	cases := []struct {
		name, method, path, body string
		code                     iothub.ErrorCode
		detail                   string
	}{
		{"unknown field", "POST", "/devices/d/messages/devicebound", `{"expiry":"2030-01-01T00:00:00Z"}`, iothub.CodeArgumentInvalid, `unknown field "expiry"`},
		{"not json", "POST", "/devices/d/messages/devicebound", `hello`, iothub.CodeArgumentInvalid, "request body"},
		{"empty body", "POST", "/devices/d/messages/devicebound", ``, iothub.CodeArgumentInvalid, "empty"},
		{"bad ack", "POST", "/devices/d/messages/devicebound", `{"ack":"always"}`, iothub.CodeArgumentInvalid, "ack"},
		{"huge", "POST", "/devices/d/messages/devicebound", `{"body":"` + strings.Repeat("A", 600<<10) + `"}`, iothub.CodeMessageTooLarge, "larger"},
		{"bad wait", "GET", "/devices/d/messages/devicebound/m?wait=soon", ``, iothub.CodeArgumentInvalid, "wait"},
		{"bad top", "GET", "/devices?top=-1", ``, iothub.CodeArgumentInvalid, "top"},
		{"no device", "POST", "/devices/ghost/messages/devicebound", `{}`, iothub.CodeDeviceNotFound, "ghost"},
		{"no message", "GET", "/devices/d/messages/devicebound/nope", ``, iothub.CodeDeviceMessageNotFound, "nope"},
		{"unknown lock", "DELETE", "/messages/serviceBound/feedback/nolock", ``, iothub.CodeDeviceMessageLockLost, "nolock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			a := e.do(tc.method, tc.path, owner, body, nil)
			er := a.err(t)
			if er.ErrorCode != tc.code || !strings.Contains(er.Detail, tc.detail) {
				t.Fatalf("%d %+v, want code %d with %q in detail", a.code, er, tc.code, tc.detail)
			}
		})
	}
	if a := e.do("GET", "/nowhere", owner, nil, nil); a.code != 404 || !strings.Contains(string(a.body), "no route") {
		t.Fatalf("unknown route: %d %s", a.code, a.body)
	}
}

func TestSendAndFeedbackWire(t *testing.T) {
	e := newEnv(t)
	owner := e.token("service", time.Hour)
	e.do("PUT", "/devices/d", e.token("iothubowner", time.Hour), map[string]any{}, nil)
	a := e.do("POST", "/devices/d/messages/devicebound", owner, iothub.SendRequest{MessageID: "m#1", Ack: iothub.AckPositive, Body: []byte{0, 1, 2}}, nil)
	if a.code != http.StatusCreated {
		t.Fatalf("send: %d %s", a.code, a.body)
	}
	var res iothub.SendResult
	if err := json.Unmarshal(a.body, &res); err != nil || res.MessageID != "m#1" {
		t.Fatalf("send result %s: %v", a.body, err)
	}
	// A message id with a "#" is addressed escaped.
	if a := e.do("GET", "/devices/d/messages/devicebound/"+url.PathEscape("m#1"), owner, nil, nil); a.code != 200 {
		t.Fatalf("status of m/1: %d %s", a.code, a.body)
	}

	dev := &conn{id: "d", ch: make(chan *iothub.Message, 4)}
	e.hub.Attach(dev)
	defer e.hub.Detach(dev)
	var m *iothub.Message
	select {
	case m = <-dev.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	if !bytes.Equal(m.Body, []byte{0, 1, 2}) {
		t.Fatalf("body %v", m.Body)
	}
	if err := e.hub.Settle(context.Background(), "d", m.LockToken, iothub.DispositionComplete, ""); err != nil {
		t.Fatal(err)
	}
	a = e.do("GET", "/messages/serviceBound/feedback?wait=10s", owner, nil, nil)
	if a.code != 200 {
		t.Fatalf("feedback: %d %s", a.code, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != iothub.FeedbackContentType {
		t.Fatalf("Content-Type %q", ct)
	}
	etag := a.header.Get("ETag")
	if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
		t.Fatalf("ETag %q: want the quoted lock token", etag)
	}
	if _, err := time.Parse(time.RFC3339Nano, a.header.Get("iothub-enqueuedtime")); err != nil {
		t.Fatalf("iothub-enqueuedtime %q: %v", a.header.Get("iothub-enqueuedtime"), err)
	}
	var recs []iothub.FeedbackRecord
	if err := json.Unmarshal(a.body, &recs); err != nil || len(recs) != 1 || recs[0].OriginalMessageID != "m#1" || recs[0].StatusCode != iothub.StatusSuccess {
		t.Fatalf("feedback body %s: %v", a.body, err)
	}
	// Azure's Description for Success.
	if recs[0].Description == "" {
		t.Fatalf("record without description: %+v", recs[0])
	}
	if a := e.do("DELETE", "/messages/serviceBound/feedback/"+etag[1:len(etag)-1], owner, nil, nil); a.code != 204 {
		t.Fatalf("complete: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/messages/serviceBound/feedback", owner, nil, nil); a.code != 204 {
		t.Fatalf("empty feedback: %d %s", a.code, a.body)
	}

	// Metrics saw it all.
	a = e.do("GET", "/metrics", "", nil, nil)
	text := string(a.body)
	for _, want := range []string{
		"c2d_messages_sent_total 1",
		`c2d_messages_settled_total{outcome="Success"} 1`,
		"c2d_deliveries_total 1",
		"c2d_send_to_settle_seconds_count 1",
		`c2d_http_requests_total{code="201",route="POST /devices/{id}/messages/devicebound"} 1`,
		`c2d_http_requests_total{code="204",route="GET /messages/serviceBound/feedback"} 1`,
		"c2d_queue_depth 0",
		"c2d_devices_connected 1",
		`c2d_devices{status="enabled"} 1`,
		"c2d_http_request_duration_seconds_bucket",
		// The per-stage breakdown: one of each for the one command (the feedback stage counts
		// only receives that waited, so only its presence is certain).
		`c2d_stage_seconds_count{stage="decode_auth"} 1`,
		`c2d_stage_seconds_count{stage="commit"} 1`,
		`c2d_stage_seconds_count{stage="deliver"} 1`,
		`c2d_stage_seconds_count{stage="settle"} 1`,
		`c2d_stage_seconds_count{stage="feedback"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	a := e.do("GET", "/healthz", "", nil, nil)
	if a.code != 200 || !strings.Contains(string(a.body), `"status":"ok"`) || !strings.Contains(string(a.body), `"version":"v-test"`) {
		t.Fatalf("healthz: %d %s", a.code, a.body)
	}
	// Once the store is gone, the hub is not healthy.
	if err := e.hub.Close(); err != nil {
		t.Fatal(err)
	}
	a = e.do("GET", "/healthz", "", nil, nil)
	if a.code != 503 || !strings.Contains(string(a.body), "unavailable") {
		t.Fatalf("healthz after close: %d %s", a.code, a.body)
	}
}

// One cause can fail the store and a listener at once (out of descriptors: SQLite cannot open its
// file, mochi cannot accept); /healthz names both, so the operator is not sent after the store
// alone.
func TestHealthzNamesEveryFailingPart(t *testing.T) {
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: hostName}.Defaults(), hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	listener := errors.New("mqtt listener mqtt: accept: too many open files")
	var failing atomic.Pointer[error]
	srv := httptest.NewServer(api.New(api.Options{Hub: h, HostName: hostName, Version: "v-test",
		Ready: func() error {
			if e := failing.Load(); e != nil {
				return *e
			}
			return nil
		}}))
	t.Cleanup(srv.Close)
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	failing.Store(&listener)
	if code, body := get(); code != 503 || !strings.Contains(body, "too many open files") || strings.Contains(body, "store") {
		t.Errorf("/healthz with a failing listener: %d %s, want 503 naming the listener alone", code, body)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != 503 || !strings.Contains(body, "store: ") || !strings.Contains(body, "mqtt listener mqtt") {
		t.Errorf("/healthz with the store and a listener failing: %d %s, want 503 naming both", code, body)
	}
	failing.Store(nil)
	if code, body := get(); code != 503 || !strings.Contains(body, "store: ") || strings.Contains(body, "listener") {
		t.Errorf("/healthz with the store failing: %d %s, want 503 naming the store alone", code, body)
	}
}

type conn struct {
	id string
	ch chan *iothub.Message
}

func (c *conn) DeviceID() string { return c.id }
func (c *conn) Extension() bool  { return true }
func (c *conn) Deliver(m *iothub.Message) error {
	c.ch <- m
	return nil
}
