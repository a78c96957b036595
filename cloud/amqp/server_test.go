package amqp_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/amqp"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

const hostName = "hub.test"

type env struct {
	t    *testing.T
	hub  *hub.Hub
	srv  *amqp.Server
	addr string
}

func newEnv(t *testing.T, cfg hub.Config, opts ...func(*amqp.Options)) *env {
	t.Helper()
	ctx := context.Background()
	cfg.HostName = hostName
	if cfg.FeedbackInterval == 0 {
		cfg.FeedbackInterval = 20 * time.Millisecond
	}
	h, err := hub.Open(ctx, t.TempDir(), cfg, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	o := amqp.Options{Hub: h, HostName: hostName, Logger: log}
	for _, f := range opts {
		f(&o)
	}
	srv := amqp.New(o)
	addr, err := srv.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if err := h.Close(); err != nil && !errors.Is(err, hub.ErrClosed) { // a test may close it first
			t.Error(err)
		}
	})
	return &env{t: t, hub: h, srv: srv, addr: addr}
}

func (e *env) device(id string) iothub.Device {
	e.t.Helper()
	d, _, err := e.hub.PutDevice(context.Background(), iothub.Device{DeviceID: id}, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// policyToken signs a token of a built-in policy for the whole hub.
func (e *env) policyToken(policy string, ttl time.Duration) string {
	e.t.Helper()
	p, ok := e.hub.Policy(policy)
	if !ok {
		e.t.Fatalf("no policy %s", policy)
	}
	tok, err := iothub.NewSASToken(hostName, p.PrimaryKey, p.Name, time.Now().Add(ttl))
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) dial(opts *goamqp.ConnOptions) *goamqp.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+e.addr, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// putToken runs a CBS put-token and returns the reply's status code and description.
func putToken(t *testing.T, s *goamqp.Session, audience, token string, msgID any) (int32, string) {
	t.Helper()
	return putTokenOfType(t, s, "servicebus.windows.net:sastoken", audience, token, msgID)
}

// putTokenOfType is putToken with the request's token type.
func putTokenOfType(t *testing.T, s *goamqp.Session, typ, audience, token string, msgID any) (int32, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snd, err := s.NewSender(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close(ctx)
	rcv, err := s.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close(ctx)
	replyTo, to := "cbs", "$cbs"
	req := &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: msgID, To: &to, ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{
			"operation": "put-token", "type": typ, "name": audience,
		},
		Value: token,
	}
	if err := snd.Send(ctx, req, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = rcv.AcceptMessage(ctx, rep)
	if rep.Properties == nil || rep.Properties.CorrelationID != msgID {
		t.Fatalf("reply correlation-id %#v, want the request's message-id %#v", rep.Properties, msgID)
	}
	code, _ := rep.ApplicationProperties["status-code"].(int32)
	desc, _ := rep.ApplicationProperties["status-description"].(string)
	return code, desc
}

func session(t *testing.T, c *goamqp.Conn) *goamqp.Session {
	t.Helper()
	s, err := c.NewSession(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sendTo(id string, body string, props map[string]any) *goamqp.Message {
	to := "/devices/" + id + "/messages/devicebound"
	return &goamqp.Message{
		Properties:            &goamqp.MessageProperties{To: &to},
		ApplicationProperties: props,
		Data:                  [][]byte{[]byte(body)},
	}
}

func TestSendAndFeedbackOverAMQP(t *testing.T) {
	e := newEnv(t, hub.Config{})
	d := e.device("pi-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.dial(nil) // no SASL: the AMQP header first, as the Node SDK does
	s := session(t, c)
	if code, desc := putToken(t, s, hostName, e.policyToken("service", time.Hour), goamqp.UUID{1, 2, 3}); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	snd, err := s.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := sendTo("pi-1", "led on", map[string]any{"iothub-ack": "full", "cmd": "led"})
	m.Properties.MessageID = "m-1"
	exp := time.Now().Add(10 * time.Minute).Truncate(time.Millisecond)
	m.Properties.AbsoluteExpiryTime = &exp
	if err := snd.Send(ctx, m, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	q, err := e.hub.Queue(ctx, "pi-1")
	if err != nil || len(q) != 1 {
		t.Fatalf("queue after an accepted send: %v %v", q, err)
	}
	if q[0].MessageID != "m-1" || q[0].Ack != iothub.AckFull || !q[0].ExpiryTimeUTC.Equal(exp) {
		t.Fatalf("queued %+v", q[0])
	}

	// Unknown device: rejected with amqp:not-found, which the SDK turns into DeviceNotFoundError.
	err = snd.Send(ctx, sendTo("nobody", "x", nil), nil)
	var ae *goamqp.Error
	if !errors.As(err, &ae) || ae.Condition != "amqp:not-found" {
		t.Fatalf("send to an unknown device: %v, want amqp:not-found", err)
	}

	// The device receives over AMQP, completes; feedback arrives on the feedback link.
	dev := e.dial(&goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	ds := session(t, dev)
	devTok, err := iothub.NewSASToken(hostName+"/devices/pi-1", d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := putToken(t, ds, hostName+"%2Fdevices%2Fpi-1", devTok, "req-1"); code != 200 {
		t.Fatalf("device put-token: %d %s", code, desc)
	}
	rcv, err := ds.NewReceiver(ctx, "/devices/pi-1/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 1 || string(got.GetData()) != "led on" || got.Properties.MessageID != "m-1" || got.ApplicationProperties["cmd"] != "led" {
		t.Fatalf("device got %+v %+v", got.Properties, got.ApplicationProperties)
	}
	if err := rcv.AcceptMessage(ctx, got); err != nil {
		t.Fatal(err)
	}
	st, err := e.hub.WaitSettled(ctx, "pi-1", "m-1")
	if err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("after accept: %+v %v", st, err)
	}

	fb, err := s.NewReceiver(ctx, "/messages/serviceBound/feedback", nil)
	if err != nil {
		t.Fatal(err)
	}
	fm, err := fb.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fm.Properties == nil || fm.Properties.ContentType == nil || *fm.Properties.ContentType != iothub.FeedbackContentType {
		t.Fatalf("feedback properties %+v", fm.Properties)
	}
	var recs []iothub.FeedbackRecord
	if err := json.Unmarshal(fm.GetData(), &recs); err != nil || len(recs) != 1 || recs[0].StatusCode != iothub.StatusSuccess || recs[0].OriginalMessageID != "m-1" {
		t.Fatalf("feedback %s: %v", fm.GetData(), err)
	}
	if err := fb.AcceptMessage(ctx, fm); err != nil {
		t.Fatal(err)
	}
}

func TestLinksNeedAToken(t *testing.T) {
	e := newEnv(t, hub.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := session(t, e.dial(nil))
	_, err := s.NewSender(ctx, "/messages/devicebound", nil)
	var ae *goamqp.Error
	if !errors.As(err, &ae) || ae.Condition != "amqp:unauthorized-access" {
		t.Fatalf("attach without a token: %v, want amqp:unauthorized-access", err)
	}
	bad := e.policyToken("registryRead", time.Hour)
	if code, desc := putToken(t, s, hostName, bad, "x"); code != 200 {
		t.Fatalf("registryRead token refused at put-token: %d %s", code, desc)
	}
	if _, err := s.NewSender(ctx, "/messages/devicebound", nil); !errors.As(err, &ae) || !strings.Contains(ae.Description, "ServiceConnect") {
		t.Fatalf("attach with registryRead: %v, want a refusal naming ServiceConnect", err)
	}
	tok := e.policyToken("service", time.Hour)
	tok = strings.Replace(tok, "sig=", "sig=AA", 1)
	if code, _ := putToken(t, s, hostName, tok, uint64(7)); code != 401 {
		t.Fatalf("bad signature: status %d, want 401", code)
	}
}

// A device's link needs a grant for that device: a policy with ServiceConnect only (the built-in
// "service") does not let a client act as a device, though its token covers the whole hub; the
// built-in "device" policy (DeviceConnect) does.
func TestServicePolicyCannotActAsDevice(t *testing.T) {
	e := newEnv(t, hub.Config{})
	e.device("d")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := e.serviceSession(nil)
	var ae *goamqp.Error
	if _, err := s.NewReceiver(ctx, "/devices/d/messages/devicebound", nil); !errors.As(err, &ae) || ae.Condition != "amqp:unauthorized-access" {
		t.Fatalf("device link with a ServiceConnect-only grant: %v, want amqp:unauthorized-access", err)
	}
	s = e.policySession(nil, "device")
	if _, err := s.NewReceiver(ctx, "/devices/d/messages/devicebound", nil); err != nil {
		t.Fatalf("device link with the device policy: %v", err)
	}
}

// put-token's checks on what a token names: a policy's token signed with its secondary key is
// accepted (key rotation), and a token without skn must name one device — one for
// `{host}/devices` alone or for a module is refused with a status, and the connection goes on.
func TestPutTokenKeysAndResources(t *testing.T) {
	e := newEnv(t, hub.Config{})
	dev := e.device("d")
	s := session(t, e.dial(nil))
	p, _ := e.hub.Policy("service")
	sec, err := iothub.NewSASToken(hostName, p.SecondaryKey, p.Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := putToken(t, s, hostName, sec, "sec"); code != 200 {
		t.Fatalf("token signed with the secondary key: %d %s, want 200", code, desc)
	}
	// Both token types Azure's SDKs send are taken (the device SDKs name IoT Hub's), no other.
	if code, desc := putTokenOfType(t, s, "azure-devices.net:sastoken", hostName, sec, "iot"); code != 200 {
		t.Fatalf("type azure-devices.net:sastoken: %d %s, want 200", code, desc)
	}
	if code, desc := putTokenOfType(t, s, "jwt", hostName, sec, "jwt"); code == 200 {
		t.Fatalf("type jwt accepted: %d %s", code, desc)
	}
	key := dev.Authentication.SymmetricKey.PrimaryKey
	for _, sr := range []string{hostName + "/devices", hostName + "/devices/d/modules/m"} {
		tok, err := iothub.NewSASToken(sr, key, "", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if code, desc := putToken(t, s, sr, tok, sr); code == 200 {
			t.Fatalf("device-key token for %s accepted: %d %s", sr, code, desc)
		}
	}
	own, err := iothub.NewSASToken(hostName+"/devices/d", key, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := putToken(t, s, hostName+"/devices/d", own, "own"); code != 200 {
		t.Fatalf("the device's own token after the refusals: %d %s, want 200", code, desc)
	}
}
