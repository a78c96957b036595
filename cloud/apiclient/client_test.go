package apiclient_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/api"
	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

const hostName = "hub.test"

type env struct {
	hub    *hub.Hub
	api    *api.Server
	srv    *httptest.Server
	owner  *apiclient.Client
	policy func(name string) *apiclient.Client
}

// newEnv runs a real hub core on a temporary store behind the real API on a real TLS socket, and
// a client signed with the iothubowner policy.
func newEnv(t *testing.T, mod func(*hub.Config)) *env {
	t.Helper()
	cfg := hub.Config{HostName: hostName, FeedbackInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	h, err := hub.Open(context.Background(), t.TempDir(), cfg.Defaults(), hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	a := api.New(api.Options{Hub: h, HostName: hostName, Version: "test"})
	srv := httptest.NewTLSServer(a)
	t.Cleanup(srv.Close)
	e := &env{hub: h, api: a, srv: srv}
	e.policy = func(name string) *apiclient.Client {
		p, ok := h.Policy(name)
		if !ok {
			t.Fatalf("no policy %q", name)
		}
		cs := iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}
		c, err := apiclient.New(cs, apiclient.Options{Endpoint: srv.URL, HTTPClient: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	e.owner = e.policy("iothubowner")
	return e
}

// device is a session attached to the hub's device side (what cloud/broker does for an MQTT
// connection): deliveries arrive on ch and are settled with hub.Settle.
type device struct {
	id string
	ch chan *iothub.Message
}

func (d *device) DeviceID() string { return d.id }
func (d *device) Extension() bool  { return true }
func (d *device) Deliver(m *iothub.Message) error {
	d.ch <- m
	return nil
}

func (e *env) attach(t *testing.T, id string) *device {
	d := &device{id: id, ch: make(chan *iothub.Message, 64)}
	e.hub.Attach(d)
	t.Cleanup(func() { e.hub.Detach(d) })
	return d
}

func (d *device) next(t *testing.T) *iothub.Message {
	t.Helper()
	select {
	case m := <-d.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("device %s: no delivery within 10s", d.id)
		return nil
	}
}

func apiErr(t *testing.T, err error, want iothub.ErrorCode) *iothub.Error {
	t.Helper()
	var ae *iothub.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want *iothub.Error %d", err, err, want)
	}
	if ae.Code != want {
		t.Fatalf("code = %d (%s), want %d; detail %q", ae.Code, ae.Code.Name(), want, ae.Detail)
	}
	return ae
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRegistry(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	c := e.owner

	b, err := c.CreateDevice(ctx, "b-dev", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if b.Authentication.SymmetricKey.PrimaryKey == "" || b.Authentication.SymmetricKey.SecondaryKey == "" || b.ETag == "" {
		t.Fatalf("created device lacks generated keys or etag: %+v", b)
	}
	if b.Status != iothub.DeviceEnabled {
		t.Fatalf("status = %q", b.Status)
	}
	if _, err := c.CreateDevice(ctx, "a-dev", "", ""); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].DeviceID != "a-dev" || list[1].DeviceID != "b-dev" {
		t.Fatalf("list = %+v, want a-dev, b-dev", list)
	}

	got, err := c.GetDevice(ctx, "b-dev")
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != b.ETag || got.Authentication.SymmetricKey.PrimaryKey != b.Authentication.SymmetricKey.PrimaryKey {
		t.Fatalf("get = %+v, want %+v", got, b)
	}

	// Disable with the etag; a second writer holding the old etag then loses.
	dis, err := c.SetDeviceStatus(ctx, "b-dev", iothub.DeviceDisabled)
	if err != nil {
		t.Fatal(err)
	}
	if dis.Status != iothub.DeviceDisabled || dis.ETag == b.ETag {
		t.Fatalf("after disable: %+v (old etag %q)", dis, b.ETag)
	}
	stale := got
	stale.Status = iothub.DeviceEnabled
	_, err = c.PutDevice(ctx, stale, got.ETag)
	apiErr(t, err, iothub.CodePreconditionFailed)
	apiErr(t, c.DeleteDevice(ctx, "b-dev", got.ETag), iothub.CodePreconditionFailed)
	// "*" is unconditional.
	if _, err := c.PutDevice(ctx, stale, "*"); err != nil {
		t.Fatal(err)
	}

	if err := c.DeleteDevice(ctx, "b-dev", ""); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDevice(ctx, "b-dev")
	apiErr(t, err, iothub.CodeDeviceNotFound)
	apiErr(t, c.DeleteDevice(ctx, "b-dev", ""), iothub.CodeDeviceNotFound)

	// A device id with characters that need escaping in a URL path survives the round trip.
	odd := "odd#id?x=1%y"
	if _, err := c.CreateDevice(ctx, odd, "", ""); err != nil {
		t.Fatal(err)
	}
	if d, err := c.GetDevice(ctx, odd); err != nil || d.DeviceID != odd {
		t.Fatalf("get %q = %+v, %v", odd, d, err)
	}
}

func TestSendQueueStatusPurge(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	c := e.owner
	if _, err := c.CreateDevice(ctx, "dev1", "", ""); err != nil {
		t.Fatal(err)
	}
	props := []iothub.AppProperty{{Name: "led", Value: "on"}, {Name: "colour", Value: "red"}}
	r1, err := c.Send(ctx, "dev1", iothub.SendRequest{MessageID: "m1", CorrelationID: "c1", Ack: iothub.AckFull, Properties: props, Body: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	if r1.MessageID != "m1" || r1.DeviceID != "dev1" || r1.EnqueuedTimeUTC.IsZero() || !r1.ExpiryTimeUTC.After(r1.EnqueuedTimeUTC) {
		t.Fatalf("send result %+v", r1)
	}
	r2, err := c.Send(ctx, "dev1", iothub.SendRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.MessageID == "" || r2.SequenceNumber <= r1.SequenceNumber {
		t.Fatalf("second send %+v after %+v: want a generated id and a larger sequence number", r2, r1)
	}

	q, err := c.Queue(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].MessageID != "m1" || q[1].MessageID != r2.MessageID || q[0].State != iothub.StateEnqueued {
		t.Fatalf("queue = %+v", q)
	}
	if len(q[0].Properties) != 2 || q[0].Properties[0] != props[0] || q[0].Properties[1] != props[1] {
		t.Fatalf("queue properties = %+v, want %+v in order", q[0].Properties, props)
	}
	st, err := c.MessageStatus(ctx, "dev1", "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != iothub.StateEnqueued || st.CorrelationID != "c1" || st.Outcome != "" {
		t.Fatalf("status = %+v", st)
	}
	dev, err := c.GetDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if dev.CloudToDeviceMessageCount != 2 {
		t.Fatalf("cloudToDeviceMessageCount = %d, want 2", dev.CloudToDeviceMessageCount)
	}

	pr, err := c.Purge(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if pr.DeviceID != "dev1" || pr.TotalMessagesPurged != 2 {
		t.Fatalf("purge = %+v", pr)
	}
	if q, err := c.Queue(ctx, "dev1"); err != nil || len(q) != 0 {
		t.Fatalf("queue after purge = %+v, %v", q, err)
	}
	st, err = c.MessageStatus(ctx, "dev1", "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Outcome != iothub.StatusPurged {
		t.Fatalf("outcome after purge = %q", st.Outcome)
	}

	_, err = c.MessageStatus(ctx, "dev1", "nope", 0)
	apiErr(t, err, iothub.CodeDeviceMessageNotFound)
	_, err = c.Send(ctx, "ghost", iothub.SendRequest{})
	apiErr(t, err, iothub.CodeDeviceNotFound)
	_, err = c.Queue(ctx, "ghost")
	apiErr(t, err, iothub.CodeDeviceNotFound)
}

func TestSendRefusals(t *testing.T) {
	e := newEnv(t, func(c *hub.Config) { c.MaxQueueDepth = 3 })
	ctx := ctxT(t)
	c := e.owner
	if _, err := c.CreateDevice(ctx, "full", "", ""); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Send(ctx, "full", iothub.SendRequest{}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_, err := c.Send(ctx, "full", iothub.SendRequest{MessageID: "fourth"})
	ae := apiErr(t, err, iothub.CodeDeviceMaximumQueueDepthExceeded)
	if ae.Detail == "" {
		t.Fatal("queue full without detail")
	}
	if _, err := c.MessageStatus(ctx, "full", "fourth", 0); err == nil {
		t.Fatal("a refused message is in the hub")
	}

	_, err = c.Send(ctx, "full", iothub.SendRequest{Ack: "sometimes"})
	ae = apiErr(t, err, iothub.CodeArgumentInvalid)
	if !strings.Contains(ae.Detail, "ack") {
		t.Fatalf("detail %q does not name the field", ae.Detail)
	}
	past := time.Now().Add(-time.Hour)
	_, err = c.Purge(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Send(ctx, "full", iothub.SendRequest{ExpiryTimeUTC: &past})
	ae = apiErr(t, err, iothub.CodeArgumentInvalid)
	if !strings.Contains(ae.Detail, "expiryTimeUtc") {
		t.Fatalf("detail %q does not name the field", ae.Detail)
	}
	_, err = c.Send(ctx, "full", iothub.SendRequest{Body: make([]byte, iothub.MaxMessageSize+1)})
	apiErr(t, err, iothub.CodeMessageTooLarge)
}

// A long-poll on a message's status returns as soon as the device settles it.
func TestMessageStatusLongPollWakesOnSettle(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	c := e.owner
	if _, err := c.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "d", iothub.SendRequest{MessageID: "x"}); err != nil {
		t.Fatal(err)
	}
	type res struct {
		st  iothub.MessageStatus
		err error
	}
	done := make(chan res, 1)
	go func() {
		st, err := c.MessageStatus(ctx, "d", "x", 50*time.Second)
		done <- res{st, err}
	}()
	dev := e.attach(t, "d")
	m := dev.next(t)
	if m.MessageID != "x" || m.LockToken == "" {
		t.Fatalf("delivery %+v", m)
	}
	select {
	case r := <-done:
		t.Fatalf("long-poll answered before the settle: %+v %v", r.st, r.err)
	default:
	}
	if err := e.hub.Settle(ctx, "d", m.LockToken, iothub.DispositionReject, "pin busy"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.st.Outcome != iothub.StatusRejected || r.st.Reason != "pin busy" || r.st.State != iothub.StateDeadLettered {
		t.Fatalf("status after reject = %+v", r.st)
	}
}

// A long-poll whose wait elapses answers 200 with the current, non-terminal status.
func TestMessageStatusLongPollElapses(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	c := e.owner
	if _, err := c.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "d", iothub.SendRequest{MessageID: "x"}); err != nil {
		t.Fatal(err)
	}
	st, err := c.MessageStatus(ctx, "d", "x", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.Outcome != "" || st.State != iothub.StateEnqueued {
		t.Fatalf("status = %+v", st)
	}
}

// Drain (shutdown) ends a running long-poll at once with the status it has.
func TestDrainEndsLongPoll(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	c := e.owner
	if _, err := c.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "d", iothub.SendRequest{MessageID: "x"}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 2)
	go func() {
		_, err := c.MessageStatus(ctx, "d", "x", time.Minute)
		errc <- err
	}()
	go func() {
		_, err := c.ReceiveFeedback(ctx, time.Minute)
		errc <- err
	}()
	// Wait until both requests are inside the server, then drain.
	waitFor(t, func() bool { return inFlight(e.api) >= 2 })
	e.api.Drain()
	for range 2 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("long-poll not ended by Drain")
		}
	}
}

func TestFeedback(t *testing.T) {
	e := newEnv(t, func(c *hub.Config) { c.FeedbackLockTimeout = time.Minute })
	ctx := ctxT(t)
	c := e.owner
	if fb, err := c.ReceiveFeedback(ctx, 0); err != nil || fb != nil {
		t.Fatalf("empty feedback = %+v, %v; want nil, nil", fb, err)
	}
	if _, err := c.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ok", "bad"} {
		if _, err := c.Send(ctx, "d", iothub.SendRequest{MessageID: id, CorrelationID: "corr-" + id, Ack: iothub.AckFull}); err != nil {
			t.Fatal(err)
		}
	}
	dev := e.attach(t, "d")
	for range 2 {
		m := dev.next(t)
		d, reason := iothub.DispositionComplete, ""
		if m.MessageID == "bad" {
			d, reason = iothub.DispositionReject, "no such pin"
		}
		if err := e.hub.Settle(ctx, "d", m.LockToken, d, reason); err != nil {
			t.Fatal(err)
		}
	}
	recs := map[string]iothub.FeedbackRecord{}
	var batches []*iothub.FeedbackBatch
	for len(recs) < 2 {
		fb, err := c.ReceiveFeedback(ctx, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if fb == nil {
			t.Fatal("no feedback within 10s")
		}
		if fb.LockToken == "" || fb.EnqueuedTimeUTC.IsZero() {
			t.Fatalf("batch without lock token or enqueued time: %+v", fb)
		}
		batches = append(batches, fb)
		for _, r := range fb.Records {
			recs[r.OriginalMessageID] = r
		}
	}
	if r := recs["ok"]; r.StatusCode != iothub.StatusSuccess || r.DeviceID != "d" || r.CorrelationID != "corr-ok" {
		t.Fatalf("ok record = %+v", r)
	}
	if r := recs["bad"]; r.StatusCode != iothub.StatusRejected || r.Reason != "no such pin" {
		t.Fatalf("bad record = %+v", r)
	}

	// Abandon the first batch: it comes back with the same records and a new lock token.
	first := batches[0]
	if err := c.AbandonFeedback(ctx, first.LockToken); err != nil {
		t.Fatal(err)
	}
	again, err := c.ReceiveFeedback(ctx, 10*time.Second)
	if err != nil || again == nil {
		t.Fatalf("receive after abandon = %+v, %v", again, err)
	}
	if again.LockToken == first.LockToken || len(again.Records) != len(first.Records) ||
		again.Records[0].OriginalMessageID != first.Records[0].OriginalMessageID {
		t.Fatalf("after abandon got %+v, want the records of %+v under a new lock", again, first)
	}
	apiErr(t, c.CompleteFeedback(ctx, first.LockToken), iothub.CodeDeviceMessageLockLost)
	if err := c.CompleteFeedback(ctx, again.LockToken); err != nil {
		t.Fatal(err)
	}
	apiErr(t, c.CompleteFeedback(ctx, again.LockToken), iothub.CodeDeviceMessageLockLost)
	for _, b := range batches[1:] {
		if err := c.CompleteFeedback(ctx, b.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	if fb, err := c.ReceiveFeedback(ctx, 0); err != nil || fb != nil {
		t.Fatalf("feedback after completing everything = %+v, %v", fb, err)
	}
}

// Completing a batch after its lock expired is 412002, and the batch is offered again.
func TestFeedbackLockLost(t *testing.T) {
	e := newEnv(t, func(c *hub.Config) { c.FeedbackLockTimeout = 300 * time.Millisecond })
	ctx := ctxT(t)
	c := e.owner
	if _, err := c.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "d", iothub.SendRequest{MessageID: "m", Ack: iothub.AckPositive}); err != nil {
		t.Fatal(err)
	}
	dev := e.attach(t, "d")
	if err := e.hub.Settle(ctx, "d", dev.next(t).LockToken, iothub.DispositionComplete, ""); err != nil {
		t.Fatal(err)
	}
	fb, err := c.ReceiveFeedback(ctx, 10*time.Second)
	if err != nil || fb == nil {
		t.Fatalf("receive = %+v, %v", fb, err)
	}
	// Not completed in time: the lock expires and the same batch is offered again.
	again, err := c.ReceiveFeedback(ctx, 10*time.Second)
	if err != nil || again == nil || again.Records[0].OriginalMessageID != "m" || again.LockToken == fb.LockToken {
		t.Fatalf("receive after lock expiry = %+v, %v", again, err)
	}
	apiErr(t, c.CompleteFeedback(ctx, fb.LockToken), iothub.CodeDeviceMessageLockLost)
	if err := c.CompleteFeedback(ctx, again.LockToken); err != nil {
		t.Fatal(err)
	}
}

// A feedback long-poll ends when the client gives up (its context), promptly.
func TestFeedbackLongPollClientCancel(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := e.owner.ReceiveFeedback(ctx, time.Minute)
		errc <- err
	}()
	waitFor(t, func() bool { return inFlight(e.api) >= 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The server side let go of it too.
	waitFor(t, func() bool { return inFlight(e.api) == 0 })
}

func TestStatusAndHealth(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	c := e.owner
	for _, id := range []string{"a", "b"} {
		if _, err := c.CreateDevice(ctx, id, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetDeviceStatus(ctx, "b", iothub.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "a", iothub.SendRequest{}); err != nil {
		t.Fatal(err)
	}
	e.attach(t, "a")
	st, err := e.policy("registryRead").Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalDeviceCount != 2 || st.EnabledDeviceCount != 1 || st.QueuedMessageCount != 1 || st.ConnectedDeviceCount != 1 {
		t.Fatalf("status = %+v", st)
	}
	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" || h.Version != "test" {
		t.Fatalf("health = %+v, %v", h, err)
	}
}

// Rights are enforced through the client too, and the detail tells what to use instead.
func TestPolicyRights(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	if _, err := e.owner.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	_, err := e.policy("registryRead").Send(ctx, "d", iothub.SendRequest{})
	ae := apiErr(t, err, iothub.CodeIotHubUnauthorizedAccess)
	if want := "policy 'registryRead' lacks ServiceConnect; use 'service' or 'iothubowner'"; ae.Detail != want {
		t.Fatalf("detail = %q, want %q", ae.Detail, want)
	}
	_, err = e.policy("service").CreateDevice(ctx, "e", "", "")
	ae = apiErr(t, err, iothub.CodeIotHubUnauthorizedAccess)
	if !strings.Contains(ae.Detail, "lacks RegistryWrite") || !strings.Contains(ae.Detail, "'registryReadWrite'") {
		t.Fatalf("detail = %q", ae.Detail)
	}
	if _, err := e.policy("service").Send(ctx, "d", iothub.SendRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.policy("registryReadWrite").CreateDevice(ctx, "e", "", ""); err != nil {
		t.Fatal(err)
	}
	_, err = e.policy("device").ListDevices(ctx)
	apiErr(t, err, iothub.CodeIotHubUnauthorizedAccess)
}

func TestTransportErrorNamesURL(t *testing.T) {
	cs := iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: "iothubowner", SharedAccessKey: "AAAA"}
	c, err := apiclient.New(cs, apiclient.Options{Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListDevices(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:1/devices") {
		t.Fatalf("err = %v, want the URL in it", err)
	}
	var ae *iothub.Error
	if errors.As(err, &ae) {
		t.Fatalf("transport error reported as hub error %v", ae)
	}
	if _, err := apiclient.New(cs, apiclient.Options{Endpoint: "ftp://x"}); err == nil {
		t.Fatal("ftp endpoint accepted")
	}
}

func inFlight(a *api.Server) int { return a.LongPolls() }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// A caller's http.Client with a short Timeout does not cut a long-poll short.
func TestLongPollOutlivesHTTPClientTimeout(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	if _, err := e.owner.CreateDevice(ctx, "d", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.owner.Send(ctx, "d", iothub.SendRequest{MessageID: "x"}); err != nil {
		t.Fatal(err)
	}
	hc := *e.srv.Client()
	hc.Timeout = 200 * time.Millisecond
	p, _ := e.hub.Policy("service")
	c, err := apiclient.New(iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey},
		apiclient.Options{Endpoint: e.srv.URL, HTTPClient: &hc})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err := c.MessageStatus(ctx, "d", "x", time.Second)
	if err != nil {
		t.Fatalf("long-poll cut: %v", err)
	}
	if st.State != iothub.StateEnqueued || time.Since(start) < time.Second {
		t.Fatalf("status %+v after %v: want the full wait and the pending status", st, time.Since(start))
	}
}
