package server_test

// Integration tests of the whole hub as a service sees it: server.Start on loopback ports (store,
// embedded broker, HTTP API), real MQTT devices (paho) and the HTTP API (apiclient and raw
// requests, so Azure's JSON field names are checked as sent). Hub settings are short (lock 300ms,
// min TTL 1s, 2 deliveries, feedback batches every 50ms) so the timer-driven paths run in seconds;
// tests wait on long-polls and conditions with deadlines, never on sleeps.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
)

const itHost = "it.c2d.test"

// deadline bounds every single expectation.
const deadline = 20 * time.Second

type itHub struct {
	t     *testing.T
	s     *server.Server
	cfg   server.Config
	owner *apiclient.Client
	base  string // http://127.0.0.1:port
}

// newITHub starts a hub with the short settings; mod adjusts the configuration first.
func newITHub(t *testing.T, mod func(*server.Config)) *itHub {
	t.Helper()
	cfg := server.Default()
	cfg.DataDir = t.TempDir()
	cfg.HostName = itHost
	cfg.Listen = server.Listen{MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", MQTTS: server.Off, HTTPS: server.Off, WS: server.Off, WSS: server.Off}
	cfg.Queue.LockTimeout = server.Duration(300 * time.Millisecond)
	cfg.Queue.MinTTL = server.Duration(time.Second)
	cfg.Queue.MaxDeliveryCount = 2
	cfg.Feedback.Interval = server.Duration(50 * time.Millisecond)
	if mod != nil {
		mod(&cfg)
	}
	logs := &lockedBuf{}
	s, err := server.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), io.Discard)
	if err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("hub log:\n%s", logs.String())
		}
	})
	h := &itHub{t: t, s: s, cfg: cfg, base: "http://" + s.Endpoints().HTTP}
	h.owner = h.client("iothubowner")
	return h
}

func (h *itHub) connectionString(policy string) iothub.ServiceConnectionString {
	h.t.Helper()
	p, ok := h.s.Hub().Policy(policy)
	if !ok {
		h.t.Fatalf("no policy %q", policy)
	}
	return iothub.ServiceConnectionString{HostName: itHost, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}
}

func (h *itHub) client(policy string) *apiclient.Client {
	h.t.Helper()
	c, err := apiclient.New(h.connectionString(policy), apiclient.Options{Endpoint: h.base})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// raw is one HTTP exchange as a service sees it.
type raw struct {
	code   int
	header http.Header
	body   []byte
}

// do sends a raw API request signed with policy's token ("" = no Authorization header).
func (h *itHub) do(method, path, policy string, body string) raw {
	h.t.Helper()
	return h.doHeader(method, path, policy, body)
}

// doHeader is do with extra request headers (name, value pairs).
func (h *itHub) doHeader(method, path, policy string, body string, header ...string) raw {
	h.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.base+path, r)
	if err != nil {
		h.t.Fatal(err)
	}
	if policy != "" {
		tok, err := h.connectionString(policy).Token(time.Now(), time.Hour)
		if err != nil {
			h.t.Fatal(err)
		}
		req.Header.Set("Authorization", tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return raw{resp.StatusCode, resp.Header, b}
}

// errorCode checks an Azure-form error body and returns its code name.
func (r raw) errorCode(t *testing.T, status int) string {
	t.Helper()
	if r.code != status {
		t.Fatalf("HTTP %d, want %d: %s", r.code, status, r.body)
	}
	var e struct {
		Message   string `json:"Message"`
		ErrorCode int    `json:"errorCode"`
		Code      string `json:"code"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if e.ErrorCode/1000 != status || !strings.HasPrefix(e.Message, "ErrorCode:"+e.Code+";") {
		t.Fatalf("error body %s: want Azure's {\"Message\":\"ErrorCode:{Name};...\"} with errorCode %dxxx", r.body, status)
	}
	return e.Code
}

func (h *itHub) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*deadline)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *itHub) device(id string) iothub.Device {
	h.t.Helper()
	d, err := h.owner.CreateDevice(h.ctx(), id, "", "")
	if err != nil {
		h.t.Fatalf("create %s: %v", id, err)
	}
	return d
}

func (h *itHub) send(id string, req iothub.SendRequest) iothub.SendResult {
	h.t.Helper()
	res, err := h.owner.Send(h.ctx(), id, req)
	if err != nil {
		h.t.Fatalf("send to %s: %v", id, err)
	}
	return res
}

// settled long-polls a message's status until it is settled.
func (h *itHub) settled(id, mid string) iothub.MessageStatus {
	h.t.Helper()
	end := time.Now().Add(deadline)
	for {
		st, err := h.owner.MessageStatus(h.ctx(), id, mid, 10*time.Second)
		if err != nil {
			h.t.Fatalf("status of %s/%s: %v", id, mid, err)
		}
		if st.Outcome != "" {
			return st
		}
		if time.Now().After(end) {
			h.t.Fatalf("%s/%s not settled within %v: %+v", id, mid, deadline, st)
		}
	}
}

// metric returns a sample's value from /metrics, or -1 when it is absent.
func (h *itHub) metric(name string) float64 {
	h.t.Helper()
	r := h.do("GET", "/metrics", "", "")
	if r.code != 200 {
		h.t.Fatalf("/metrics: %d", r.code)
	}
	for _, l := range strings.Split(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				h.t.Fatalf("/metrics line %q: %v", l, err)
			}
			return f
		}
	}
	return -1
}

// ---- devices ----

// itDevice is a real MQTT device: deliveries arrive on msgs (the handler never blocks).
type itDevice struct {
	t    *testing.T
	id   string
	c    paho.Client
	msgs chan paho.Message
	lost chan error
}

type devOpts struct {
	ext      bool   // c2d-ext=dispositions
	password string // default: a fresh 1h token
	noSub    bool
}

func (h *itHub) dial(d iothub.Device, o devOpts) (*itDevice, error) {
	h.t.Helper()
	if o.password == "" {
		tok, err := iothub.DeviceConnectionString{HostName: itHost, DeviceID: d.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}.Token(time.Now(), time.Hour)
		if err != nil {
			h.t.Fatal(err)
		}
		o.password = tok
	}
	extra := url.Values{}
	if o.ext {
		extra.Set(iothub.ExtensionParam, iothub.ExtensionDispositions)
	}
	dev := &itDevice{t: h.t, id: d.DeviceID, msgs: make(chan paho.Message, 256), lost: make(chan error, 1)}
	po := paho.NewClientOptions().AddBroker("tcp://" + h.s.Endpoints().MQTT).
		SetClientID(d.DeviceID).SetUsername(iothub.FormatUsername(itHost, d.DeviceID, "", extra)).SetPassword(o.password).
		SetCleanSession(false).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(deadline).SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { dev.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { dev.lost <- err })
	dev.c = paho.NewClient(po)
	tok := dev.c.Connect()
	if !tok.WaitTimeout(deadline) {
		h.t.Fatalf("%s: no CONNACK within %v", d.DeviceID, deadline)
	}
	h.t.Cleanup(func() { dev.c.Disconnect(0) })
	if err := tok.Error(); err != nil {
		return nil, err
	}
	if !o.noSub {
		st := dev.c.Subscribe(iothub.DeviceBoundFilter(d.DeviceID), 1, nil)
		if !st.WaitTimeout(deadline) || st.Error() != nil {
			h.t.Fatalf("%s: subscribe: %v", d.DeviceID, st.Error())
		}
	}
	return dev, nil
}

func (h *itHub) connect(d iothub.Device, o devOpts) *itDevice {
	h.t.Helper()
	dev, err := h.dial(d, o)
	if err != nil {
		h.t.Fatalf("%s: CONNECT refused: %v", d.DeviceID, err)
	}
	return dev
}

func (d *itDevice) next() *iothub.Message {
	d.t.Helper()
	select {
	case m := <-d.msgs:
		_, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
		if err != nil {
			d.t.Fatalf("%s: topic %q: %v", d.id, m.Topic(), err)
		}
		msg.Body = m.Payload()
		return msg
	case err := <-d.lost:
		d.t.Fatalf("%s: connection lost: %v", d.id, err)
	case <-time.After(deadline):
		d.t.Fatalf("%s: no message within %v", d.id, deadline)
	}
	return nil
}

// settle publishes a disposition (extension) and waits for its PUBACK, which the hub gives once
// the outcome is durable.
func (d *itDevice) settle(lockToken string, disp iothub.Disposition, reason string) error {
	var body []byte
	if reason != "" {
		body, _ = json.Marshal(iothub.DispositionBody{Reason: reason})
	}
	tok := d.c.Publish(iothub.DispositionTopic(d.id, lockToken, disp), 1, false, body)
	if !tok.WaitTimeout(deadline) {
		return errors.New("no PUBACK for the disposition")
	}
	return tok.Error()
}

func (d *itDevice) waitLost() {
	d.t.Helper()
	select {
	case <-d.lost:
	case <-time.After(deadline):
		d.t.Fatalf("%s: connection not closed within %v", d.id, deadline)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ---- the lifecycle × ack-mode matrix ----

// action is what a device does with the nth delivery (from 1) of a message.
type action func(nth int) string

const (
	doComplete = "complete"
	doReject   = "reject"
	doAbandon  = "abandon"
	doIgnore   = "ignore" // neither settle nor abandon: the lock expires
)

// TestLifecycleAndFeedbackPerAckMode drives every lifecycle path once per ack mode, through MQTT
// (paho devices) and the HTTP API, and checks what a service sees: each message's final status
// (GET .../devicebound/{id}?wait=), exactly the feedback records Azure's ack rules call for, each
// once, with Azure's field names and the device's reason, and the settle counters on /metrics.
func TestLifecycleAndFeedbackPerAckMode(t *testing.T) {
	acks := []iothub.AckMode{iothub.AckNone, iothub.AckPositive, iothub.AckNegative, iothub.AckFull}
	// A lock long enough that a device settling its second delivery on a busy machine (the whole
	// suite runs in parallel) does not lose it too; lockexpiry and deliverycount wait one out.
	h := newITHub(t, func(c *server.Config) {
		c.Queue.MaxQueueDepth = len(acks)
		c.Queue.LockTimeout = server.Duration(time.Second)
	})

	type scenario struct {
		name    string
		online  bool   // a device is connected and acts
		ext     bool   // it uses the disposition extension (else its PUBACK completes)
		act     action // for ext devices
		expiry  bool   // sent with the shortest expiry (min_ttl), device offline
		purge   bool   // purged over HTTP while the device is offline
		outcome iothub.FeedbackStatus
		state   iothub.MessageState
		dc      int // deliveries made
		reason  string
	}
	always := func(a string) action { return func(int) string { return a } }
	scenarios := []scenario{
		{name: "puback", online: true, outcome: iothub.StatusSuccess, state: iothub.StateCompleted, dc: 1},
		{name: "complete", online: true, ext: true, act: always(doComplete), outcome: iothub.StatusSuccess, state: iothub.StateCompleted, dc: 1},
		{name: "reject", online: true, ext: true, act: always(doReject), outcome: iothub.StatusRejected, state: iothub.StateDeadLettered, dc: 1, reason: "outputs.led9: no such output"},
		{name: "abandon", online: true, ext: true, act: func(n int) string { return map[bool]string{true: doAbandon, false: doComplete}[n == 1] },
			outcome: iothub.StatusSuccess, state: iothub.StateCompleted, dc: 2},
		{name: "lockexpiry", online: true, ext: true, act: func(n int) string { return map[bool]string{true: doIgnore, false: doComplete}[n == 1] },
			outcome: iothub.StatusSuccess, state: iothub.StateCompleted, dc: 2},
		{name: "deliverycount", online: true, ext: true, act: func(n int) string { return map[bool]string{true: doAbandon, false: doIgnore}[n == 1] },
			outcome: iothub.StatusDeliveryCountExceeded, state: iothub.StateDeadLettered, dc: 2},
		{name: "ttl-offline", expiry: true, outcome: iothub.StatusExpired, state: iothub.StateDeadLettered, dc: 0},
		{name: "purge", purge: true, outcome: iothub.StatusPurged, state: iothub.StatePurged, dc: 0},
	}
	// Azure's ack rules (plus c2d's Purged for negative/full), written out rather than derived.
	wants := map[iothub.AckMode][]iothub.FeedbackStatus{
		iothub.AckNone:     nil,
		iothub.AckPositive: {iothub.StatusSuccess},
		iothub.AckNegative: {iothub.StatusRejected, iothub.StatusExpired, iothub.StatusDeliveryCountExceeded, iothub.StatusPurged},
		iothub.AckFull:     {iothub.StatusSuccess, iothub.StatusRejected, iothub.StatusExpired, iothub.StatusDeliveryCountExceeded, iothub.StatusPurged},
	}
	descriptions := map[iothub.FeedbackStatus]string{
		iothub.StatusSuccess: "Success", iothub.StatusRejected: "Message rejected", iothub.StatusExpired: "Message expired",
		iothub.StatusDeliveryCountExceeded: "Delivery count exceeded", iothub.StatusPurged: "Message purged",
	}

	type sent struct {
		sc  scenario
		ack iothub.AckMode
		res iothub.SendResult
	}
	var all []sent
	gens := map[string]string{}
	var workers sync.WaitGroup
	stop := make(chan struct{})
	defer func() { close(stop); workers.Wait() }()
	errc := make(chan error, 64)

	for _, sc := range scenarios {
		dev := h.device(sc.name)
		gens[sc.name] = dev.GenerationID
		if sc.online {
			d := h.connect(dev, devOpts{ext: sc.ext})
			if sc.ext {
				workers.Add(1)
				go func() { // the device: acts on each delivery off paho's goroutine
					defer workers.Done()
					seen := map[string]int{}
					for {
						select {
						case <-stop:
							return
						case m := <-d.msgs:
							_, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
							if err != nil {
								errc <- err
								return
							}
							seen[msg.MessageID]++
							var disp iothub.Disposition
							reason := ""
							switch sc.act(seen[msg.MessageID]) {
							case doIgnore:
								continue
							case doComplete:
								disp = iothub.DispositionComplete
							case doAbandon:
								disp = iothub.DispositionAbandon
							case doReject:
								disp, reason = iothub.DispositionReject, sc.reason
							}
							if err := d.settle(msg.LockToken, disp, reason); err != nil {
								errc <- fmt.Errorf("%s: %s %s: %w", sc.name, disp, msg.MessageID, err)
							}
						}
					}
				}()
			}
		}
		for _, ack := range acks {
			req := iothub.SendRequest{MessageID: sc.name + "-" + string(ack), CorrelationID: "corr-" + sc.name + "-" + string(ack),
				Ack: ack, Properties: []iothub.AppProperty{{Name: "scenario", Value: sc.name}}}
			if sc.expiry {
				exp := time.Now().Add(time.Duration(h.cfg.Queue.MinTTL))
				req.ExpiryTimeUTC = &exp
			}
			all = append(all, sent{sc, ack, h.send(sc.name, req)})
		}
		if sc.purge {
			// Queue full first: the limit is a clear 403004 to the sender, and nothing is stored.
			r := h.do("POST", "/devices/purge/messages/devicebound", "service", `{"messageId":"one-too-many","ack":"full"}`)
			if code := r.errorCode(t, http.StatusForbidden); code != "DeviceMaximumQueueDepthExceeded" {
				t.Fatalf("send to a full queue: code %q: %s", code, r.body)
			}
			if !strings.Contains(string(r.body), "purge") {
				t.Errorf("queue-full error does not say the way out: %s", r.body)
			}
			var pr iothub.PurgeResult
			r = h.do("DELETE", "/devices/purge/commands", "service", "")
			if err := json.Unmarshal(r.body, &pr); r.code != 200 || err != nil || pr.TotalMessagesPurged != len(acks) || pr.DeviceID != "purge" {
				t.Fatalf("purge: %d %s", r.code, r.body)
			}
			if r := h.do("GET", "/devices/purge/messages/devicebound/one-too-many", "service", ""); r.errorCode(t, http.StatusNotFound) != "DeviceMessageNotFound" {
				t.Fatalf("the refused message is in the hub: %s", r.body)
			}
		}
	}

	// Every message ends as its scenario says.
	statuses := map[string]iothub.MessageStatus{}
	for _, s := range all {
		st := h.settled(s.sc.name, s.res.MessageID)
		statuses[s.res.MessageID] = st
		if st.Outcome != s.sc.outcome || st.State != s.sc.state || st.DeliveryCount != s.sc.dc || st.Reason != s.sc.reason ||
			st.Ack != s.ack || st.SettledTimeUTC == nil {
			t.Errorf("%s: status %+v; want outcome %s, state %s, %d deliveries, reason %q", s.res.MessageID, st,
				s.sc.outcome, s.sc.state, s.sc.dc, s.sc.reason)
		}
	}
	select {
	case err := <-errc:
		t.Fatalf("device: %v", err)
	default:
	}

	// The TTL-offline device connects after its messages expired: it gets none of them, only
	// what is sent now.
	late := h.connect(iothub.Device{DeviceID: "ttl-offline", Authentication: mustGet(t, h, "ttl-offline").Authentication}, devOpts{})
	fresh := h.send("ttl-offline", iothub.SendRequest{MessageID: "after-expiry"})
	if got := late.next(); got.MessageID != fresh.MessageID {
		t.Fatalf("device that was offline got %q first; its expired messages must not be delivered", got.MessageID)
	}
	if st := h.settled("ttl-offline", fresh.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("after-expiry: %+v", st)
	}

	// Feedback, as a service reads it: raw records, Azure's field names, each wanted one once.
	type want struct {
		s  sent
		st iothub.MessageStatus
	}
	expected := map[string]want{}
	for _, s := range all {
		if slices.Contains(wants[s.ack], s.sc.outcome) {
			expected[s.res.MessageID] = want{s, statuses[s.res.MessageID]}
		}
	}
	azureFields := []string{"originalMessageId", "deviceId", "deviceGenerationId", "enqueuedTimeUtc", "statusCode", "description"}
	c2dFields := []string{"reason", "deliveryCount", "correlationId"}
	got := map[string]int{}
	lockToken := regexp.MustCompile(`^"[^"]+"$`)
	for received := 0; received < len(expected); {
		r := h.do("GET", "/messages/serviceBound/feedback?wait=10s", "service", "")
		if r.code == http.StatusNoContent {
			t.Fatalf("no feedback batch within 10s; have %d of %d records", received, len(expected))
		}
		if r.code != 200 || r.header.Get("Content-Type") != iothub.FeedbackContentType || !lockToken.MatchString(r.header.Get("ETag")) {
			t.Fatalf("feedback: %d %v %s", r.code, r.header, r.body)
		}
		var recs []map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &recs); err != nil {
			t.Fatalf("feedback body %s: %v", r.body, err)
		}
		for _, rec := range recs {
			for k := range rec {
				if !slices.Contains(azureFields, k) && !slices.Contains(c2dFields, k) {
					t.Errorf("feedback record has an unknown field %q: %v", k, rec)
				}
			}
			for _, k := range azureFields {
				if _, ok := rec[k]; !ok {
					t.Errorf("feedback record lacks Azure's %q", k)
				}
			}
			var fr iothub.FeedbackRecord
			b, _ := json.Marshal(rec)
			if err := json.Unmarshal(b, &fr); err != nil {
				t.Fatal(err)
			}
			received++
			got[fr.OriginalMessageID]++
			w, ok := expected[fr.OriginalMessageID]
			if !ok {
				t.Errorf("unexpected feedback record %s", b)
				continue
			}
			sc := w.s.sc
			if fr.StatusCode != sc.outcome || fr.DeviceID != sc.name || fr.DeviceGenerationID != gens[sc.name] ||
				fr.Description != descriptions[sc.outcome] || fr.Reason != sc.reason || fr.DeliveryCount != sc.dc ||
				fr.CorrelationID != "corr-"+w.s.res.MessageID {
				t.Errorf("feedback record %s; want %s from %s (generation %s), %d deliveries, reason %q", b,
					sc.outcome, sc.name, gens[sc.name], sc.dc, sc.reason)
			}
			// Azure: "when the outcome of the message happened" (not when it was sent).
			if w.st.SettledTimeUTC == nil || !fr.EnqueuedTimeUTC.Equal(*w.st.SettledTimeUTC) {
				t.Errorf("%s: feedback enqueuedTimeUtc %v, want the outcome's time %v (sent %v)",
					fr.OriginalMessageID, fr.EnqueuedTimeUTC, w.st.SettledTimeUTC, w.s.res.EnqueuedTimeUTC)
			}
			if _, has := rec["reason"]; has != (sc.reason != "") {
				t.Errorf("%s: reason field present = %v", fr.OriginalMessageID, has)
			}
		}
		etag := r.header.Get("ETag")
		if r := h.do("DELETE", "/messages/serviceBound/feedback/"+url.PathEscape(etag[1:len(etag)-1]), "service", ""); r.code != http.StatusNoContent {
			t.Fatalf("complete feedback: %d %s", r.code, r.body)
		}
	}
	for mid, n := range got {
		if n != 1 {
			t.Errorf("%s: %d feedback records, want 1", mid, n)
		}
	}
	// Every record was written in its message's settling transaction and batches form within
	// 50ms: after a quiet feedback interval ×10 there must be nothing more.
	if r := h.do("GET", "/messages/serviceBound/feedback?wait=500ms", "service", ""); r.code != http.StatusNoContent {
		t.Fatalf("extra feedback after every wanted record: %d %s", r.code, r.body)
	}

	// /metrics counted every settle by outcome (the late device's message adds one Success).
	count := map[iothub.FeedbackStatus]int{}
	for _, s := range all {
		count[s.sc.outcome]++
	}
	count[iothub.StatusSuccess]++
	for o, n := range count {
		name := fmt.Sprintf(`c2d_messages_settled_total{outcome="%s"}`, o)
		if v := h.metric(name); v != float64(n) {
			t.Errorf("%s = %v, want %d", name, v, n)
		}
	}
	for name, v := range map[string]float64{
		"c2d_messages_sent_total": float64(len(all) + 1),
		// abandon: 1 each; lock expiry: 1 each; delivery count: its abandon (the lock expiry of the
		// last delivery is DeliveryCountExceeded, not a return to the queue).
		"c2d_abandons_total":   float64(3 * len(acks)),
		"c2d_deliveries_total": float64(len(acks)*(1+1+1+2+2+2) + 1),
		"c2d_queue_depth":      0,
		"c2d_feedback_pending": 0,
	} {
		if got := h.metric(name); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
}

func mustGet(t *testing.T, h *itHub, id string) iothub.Device {
	t.Helper()
	d, err := h.owner.GetDevice(h.ctx(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAuthFailuresAndIsolation: what a refused device or service sees, over MQTT (paho) and HTTP,
// against the whole hub: bad and expired tokens, a disabled device (disabled over the API while
// connected), wrong policies; a SAS token that expires mid-session; and cross-device isolation.
func TestAuthFailuresAndIsolation(t *testing.T) {
	// A long lock: in-flight messages must come back through disconnects here, not lock expiry.
	h := newITHub(t, func(c *server.Config) { c.Queue.LockTimeout = server.Duration(time.Minute) })
	a := h.device("dev-a")
	b := h.device("dev-b")
	keyOf := func(d iothub.Device) string { return d.Authentication.SymmetricKey.PrimaryKey }
	devToken := func(d iothub.Device, key string, expiry time.Time) string {
		tok, err := iothub.NewSASToken(iothub.DeviceResource(itHost, d.DeviceID, ""), key, "", expiry)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	polToken := func(policy string) string {
		tok, err := h.connectionString(policy).Token(time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hour := time.Now().Add(time.Hour)

	t.Run("mqtt", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			password string
			want     error
		}{
			{"another device's key", devToken(a, keyOf(b), hour), pahopackets.ErrorRefusedBadUsernameOrPassword},
			{"expired token", devToken(a, keyOf(a), time.Now().Add(-time.Minute)), pahopackets.ErrorRefusedBadUsernameOrPassword},
			{"garbage token", "SharedAccessSignature sr=x&sig=y&se=1", pahopackets.ErrorRefusedBadUsernameOrPassword},
			{"service policy token", polToken("service"), pahopackets.ErrorRefusedBadUsernameOrPassword},
			{"device policy token", polToken("device"), nil},
		} {
			d, err := h.dial(a, devOpts{password: tc.password, noSub: true})
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Errorf("%s: CONNECT %v, want %v", tc.name, err, tc.want)
			}
			if d != nil {
				d.c.Disconnect(0)
			}
		}
		if v := h.metric("c2d_mqtt_auth_failures_total"); v != 4 {
			t.Errorf("c2d_mqtt_auth_failures_total = %v, want 4", v)
		}
	})

	t.Run("http", func(t *testing.T) {
		own, _ := h.s.Hub().Policy("iothubowner")
		expired, err := iothub.NewSASToken(itHost, own.PrimaryKey, "iothubowner", time.Now().Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		forged, err := iothub.NewSASToken(itHost, keyOf(a), "iothubowner", hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, auth, method, path, detail string
		}{
			{"no header", "", "GET", "/devices", "Authorization"},
			{"expired", expired, "GET", "/devices", "expired"},
			{"bad signature", forged, "GET", "/devices", "signature"},
			{"device token", devToken(a, keyOf(a), hour), "GET", "/devices", "policy"},
			{"registryRead sends", polToken("registryRead"), "POST", "/devices/dev-a/messages/devicebound", "ServiceConnect"},
			{"service reads the registry", polToken("service"), "GET", "/devices/dev-a", "RegistryRead"},
			{"device policy", polToken("device"), "GET", "/messages/serviceBound/feedback", "ServiceConnect"},
		} {
			req, _ := http.NewRequest(tc.method, h.base+tc.path, strings.NewReader(`{}`))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r := raw{resp.StatusCode, resp.Header, body}
			if code := r.errorCode(t, http.StatusUnauthorized); code != "IotHubUnauthorizedAccess" || !strings.Contains(string(body), tc.detail) {
				t.Errorf("%s: %s; want IotHubUnauthorizedAccess naming %q", tc.name, body, tc.detail)
			}
		}
		// Nothing was sent by the refused request.
		if q, err := h.owner.Queue(h.ctx(), "dev-a"); err != nil || len(q) != 0 {
			t.Errorf("dev-a's queue after refused sends: %+v, %v", q, err)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		da := h.connect(a, devOpts{ext: true})
		db := h.connect(b, devOpts{ext: true})
		for _, f := range []string{iothub.DeviceBoundFilter("dev-b"), "devices/+/messages/devicebound/#", "#"} {
			st := da.c.Subscribe(f, 1, nil)
			if !st.WaitTimeout(deadline) || st.Error() != nil {
				t.Fatalf("subscribe %s: %v", f, st.Error())
			}
			if g := st.(*paho.SubscribeToken).Result()[f]; g != 0x80 {
				t.Errorf("dev-a subscribing to %q granted 0x%02x, want 0x80", f, g)
			}
		}
		rb := h.send("dev-b", iothub.SendRequest{MessageID: "for-b", Ack: iothub.AckFull})
		mb := db.next()
		if mb.MessageID != rb.MessageID {
			t.Fatalf("dev-b got %q", mb.MessageID)
		}
		// A tries to reject B's message with B's lock token: refused, and (MQTT 3.1.1 has no
		// negative PUBACK) its connection closed.
		da.c.Publish(iothub.DispositionTopic("dev-b", mb.LockToken, iothub.DispositionReject), 1, false, []byte(`{"reason":"hijack"}`))
		da.waitLost()
		if st, err := h.owner.MessageStatus(h.ctx(), "dev-b", "for-b", 0); err != nil || st.State != iothub.StateInvisible {
			t.Fatalf("dev-b's message after dev-a's attempt: %+v, %v", st, err)
		}
		// A, back, gets only its own messages.
		da = h.connect(a, devOpts{ext: true})
		ra := h.send("dev-a", iothub.SendRequest{MessageID: "for-a"})
		ma := da.next()
		if ma.MessageID != ra.MessageID {
			t.Fatalf("dev-a got %q, want only its own %q", ma.MessageID, ra.MessageID)
		}
		if err := da.settle(ma.LockToken, iothub.DispositionComplete, ""); err != nil {
			t.Fatal(err)
		}
		if err := db.settle(mb.LockToken, iothub.DispositionComplete, ""); err != nil {
			t.Fatal(err)
		}
		if st := h.settled("dev-b", "for-b"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
			t.Fatalf("dev-b's message: %+v", st)
		}
		da.c.Disconnect(0)
		db.c.Disconnect(0)
	})

	t.Run("disabled over the API", func(t *testing.T) {
		d := h.connect(b, devOpts{ext: true})
		r := h.send("dev-b", iothub.SendRequest{MessageID: "in-flight"})
		if m := d.next(); m.MessageID != r.MessageID {
			t.Fatalf("got %q", m.MessageID)
		}
		if _, err := h.owner.SetDeviceStatus(h.ctx(), "dev-b", iothub.DeviceDisabled); err != nil {
			t.Fatal(err)
		}
		d.waitLost()
		waitFor(t, "the in-flight message back in the queue", func() bool {
			st, err := h.owner.MessageStatus(h.ctx(), "dev-b", "in-flight", 0)
			return err == nil && st.State == iothub.StateEnqueued
		})
		if _, err := h.dial(b, devOpts{noSub: true}); !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
			t.Fatalf("disabled device's CONNECT: %v, want not authorised", err)
		}
		if _, err := h.owner.SetDeviceStatus(h.ctx(), "dev-b", iothub.DeviceEnabled); err != nil {
			t.Fatal(err)
		}
		d = h.connect(b, devOpts{ext: true})
		m := d.next()
		if m.MessageID != "in-flight" {
			t.Fatalf("re-enabled device got %q", m.MessageID)
		}
		if err := d.settle(m.LockToken, iothub.DispositionComplete, ""); err != nil {
			t.Fatal(err)
		}
		if st := h.settled("dev-b", "in-flight"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 2 {
			t.Fatalf("%+v", st)
		}
		d.c.Disconnect(0)
	})

	t.Run("token expires mid-session", func(t *testing.T) {
		// se is whole seconds: this token lives 1–2 s.
		d := h.connect(a, devOpts{ext: true, password: devToken(a, keyOf(a), time.Now().Add(2*time.Second))})
		r := h.send("dev-a", iothub.SendRequest{MessageID: "when-token-expires"})
		if m := d.next(); m.MessageID != r.MessageID {
			t.Fatalf("got %q", m.MessageID)
		}
		d.waitLost()
		waitFor(t, "the in-flight message back in the queue", func() bool {
			st, err := h.owner.MessageStatus(h.ctx(), "dev-a", r.MessageID, 0)
			return err == nil && st.State == iothub.StateEnqueued
		})
		d = h.connect(a, devOpts{ext: true})
		m := d.next()
		if m.MessageID != r.MessageID {
			t.Fatalf("after reconnecting with a new token got %q", m.MessageID)
		}
		if err := d.settle(m.LockToken, iothub.DispositionComplete, ""); err != nil {
			t.Fatal(err)
		}
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

// TestPurgeWhileInFlight: a purge takes the message a device holds (Invisible) too; the device's
// late PUBACK changes nothing, its delivery slot is free again (max_in_flight 1), and the next
// message is delivered.
func TestPurgeWhileInFlight(t *testing.T) {
	h := newITHub(t, func(c *server.Config) {
		c.Queue.LockTimeout = server.Duration(time.Minute)
		c.Queue.MaxInFlight = 1
	})
	dev := h.device("busy")
	// A plain (Azure) device that acknowledges by hand.
	tok, err := iothub.DeviceConnectionString{HostName: itHost, DeviceID: "busy", SharedAccessKey: dev.Authentication.SymmetricKey.PrimaryKey}.Token(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan paho.Message, 16)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.s.Endpoints().MQTT).
		SetClientID("busy").SetUsername(iothub.FormatUsername(itHost, "busy", "", nil)).SetPassword(tok).
		SetCleanSession(true).SetProtocolVersion(4).SetAutoReconnect(false).SetAutoAckDisabled(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { msgs <- m }))
	if ct := c.Connect(); !ct.WaitTimeout(deadline) || ct.Error() != nil {
		t.Fatalf("connect: %v", ct.Error())
	}
	defer c.Disconnect(0)
	if st := c.Subscribe(iothub.DeviceBoundFilter("busy"), 1, nil); !st.WaitTimeout(deadline) || st.Error() != nil {
		t.Fatalf("subscribe: %v", st.Error())
	}
	next := func() paho.Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(deadline):
			t.Fatal("no delivery")
			return nil
		}
	}
	h.send("busy", iothub.SendRequest{MessageID: "held", Ack: iothub.AckFull})
	h.send("busy", iothub.SendRequest{MessageID: "waiting", Ack: iothub.AckFull})
	held := next()
	if _, m, _ := iothub.ParseDeviceBoundTopic(held.Topic()); m == nil || m.MessageID != "held" {
		t.Fatalf("first delivery %q", held.Topic())
	}
	if q, err := h.owner.Queue(h.ctx(), "busy"); err != nil || len(q) != 2 || q[0].State != iothub.StateInvisible || q[1].State != iothub.StateEnqueued {
		t.Fatalf("queue with one in flight (max_in_flight 1): %+v, %v", q, err)
	}
	pr, err := h.owner.Purge(h.ctx(), "busy")
	if err != nil || pr.TotalMessagesPurged != 2 {
		t.Fatalf("purge: %+v, %v", pr, err)
	}
	held.Ack() // too late: the message is Purged
	after := h.send("busy", iothub.SendRequest{MessageID: "after-purge"})
	m := next()
	if _, got, _ := iothub.ParseDeviceBoundTopic(m.Topic()); got == nil || got.MessageID != after.MessageID {
		t.Fatalf("after the purge the device got %q, want %q", m.Topic(), after.MessageID)
	}
	m.Ack()
	if st := h.settled("busy", "after-purge"); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("after-purge: %+v", st)
	}
	for _, mid := range []string{"held", "waiting"} {
		if st := h.settled("busy", mid); st.Outcome != iothub.StatusPurged || st.State != iothub.StatePurged {
			t.Errorf("%s: %+v", mid, st)
		}
	}
}

// TestHubDefaultTTL: a message sent without an expiry gets the hub's default_ttl; it expires while
// the device is offline (negative feedback), and a device that connects later never sees it. The
// queue-depth gauge follows.
func TestHubDefaultTTL(t *testing.T) {
	h := newITHub(t, func(c *server.Config) { c.Queue.DefaultTTL = server.Duration(time.Second) })
	dev := h.device("sleepy")
	res := h.send("sleepy", iothub.SendRequest{MessageID: "no-expiry-given", Ack: iothub.AckNegative})
	if got := res.ExpiryTimeUTC.Sub(res.EnqueuedTimeUTC); got != time.Second {
		t.Fatalf("expiry %v after enqueue, want default_ttl 1s", got)
	}
	if v := h.metric("c2d_queue_depth"); v != 1 {
		t.Errorf("c2d_queue_depth = %v with one pending message", v)
	}
	if st := h.settled("sleepy", res.MessageID); st.Outcome != iothub.StatusExpired || st.DeliveryCount != 0 {
		t.Fatalf("%+v", st)
	}
	if v := h.metric("c2d_queue_depth"); v != 0 {
		t.Errorf("c2d_queue_depth = %v after the expiry", v)
	}
	b, err := h.owner.ReceiveFeedback(h.ctx(), 10*time.Second)
	if err != nil || b == nil || len(b.Records) != 1 || b.Records[0].StatusCode != iothub.StatusExpired || b.Records[0].OriginalMessageID != res.MessageID {
		t.Fatalf("feedback: %+v, %v", b, err)
	}
	d := h.connect(dev, devOpts{})
	next := h.send("sleepy", iothub.SendRequest{MessageID: "fresh"})
	m := d.next()
	if m.MessageID != next.MessageID {
		t.Fatalf("device got %q first", m.MessageID)
	}
	if !m.ExpiryTime.IsZero() {
		t.Errorf("$.exp sent for a message without an explicit expiry: %v", m.ExpiryTime)
	}
}
