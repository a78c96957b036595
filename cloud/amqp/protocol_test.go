package amqp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/amqp"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// serviceSession is a session authorized with the service policy.
func (e *env) serviceSession(opts *goamqp.ConnOptions) *goamqp.Session {
	e.t.Helper()
	return e.policySession(opts, "service")
}

// policySession is a session authorized with a built-in policy's token for the whole hub.
func (e *env) policySession(opts *goamqp.ConnOptions, policy string) *goamqp.Session {
	e.t.Helper()
	s := session(e.t, e.dial(opts))
	if code, desc := putToken(e.t, s, hostName, e.policyToken(policy, time.Hour), "svc"); code != 200 {
		e.t.Fatalf("put-token with %s: %d %s", policy, code, desc)
	}
	return s
}

func TestQueueFullAndTooLarge(t *testing.T) {
	e := newEnv(t, hub.Config{MaxQueueDepth: 2})
	e.device("d")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	snd, err := e.serviceSession(nil).NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := snd.Send(ctx, sendTo("d", "x", nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	var ae *goamqp.Error
	err = snd.Send(ctx, sendTo("d", "x", nil), nil)
	if !errors.As(err, &ae) || ae.Condition != "amqp:resource-limit-exceeded" || !strings.Contains(ae.Description, "limit 2") {
		t.Fatalf("third send to a queue of 2: %v, want amqp:resource-limit-exceeded", err)
	}
	if _, err := e.hub.Purge(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	err = snd.Send(ctx, sendTo("d", strings.Repeat("x", iothub.MaxMessageSize+1), nil), nil)
	if !errors.As(err, &ae) || ae.Condition != "amqp:link:message-size-exceeded" {
		t.Fatalf("65 KB send: %v, want amqp:link:message-size-exceeded", err)
	}
	bad := sendTo("d", "x", map[string]any{"iothub-ack": "sometimes"})
	if err := snd.Send(ctx, bad, nil); !errors.As(err, &ae) || ae.Condition != "com.microsoft:argument-error" || !strings.Contains(ae.Description, "iothub-ack") {
		t.Fatalf("bad iothub-ack: %v, want com.microsoft:argument-error naming it", err)
	}
	noTo := goamqp.NewMessage([]byte("x"))
	if err := snd.Send(ctx, noTo, nil); !errors.As(err, &ae) || !strings.Contains(ae.Description, "no to") {
		t.Fatalf("send without to: %v", err)
	}
}

// Small frames both ways: the client splits its 60 KB send into many transfers, the hub splits the
// delivery to a device whose max-frame-size is 512; feedback arrives in many frames too. The
// feedback receiver releases the first batch (abandon) and gets it again.
func TestMultiFrameAndFeedbackAbandon(t *testing.T) {
	e := newEnv(t, hub.Config{})
	dev := e.device("big")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	small := &goamqp.ConnOptions{MaxFrameSize: 512}
	s := e.serviceSession(small)
	snd, err := s.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789"), 6000)
	m := sendTo("big", string(body), map[string]any{"iothub-ack": "full"})
	m.Properties.MessageID = goamqp.UUID{0xde, 0xad}
	if err := snd.Send(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	ds := session(t, e.dial(small))
	tok, _ := iothub.NewSASToken(hostName+"/devices/big", dev.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if code, desc := putToken(t, ds, hostName+"/devices/big", tok, "d"); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	rcv, err := ds.NewReceiver(ctx, "/devices/big/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.GetData(), body) || got.Properties.MessageID != (goamqp.UUID{0xde, 0xad}) {
		t.Fatalf("device got %d bytes, id %#v", len(got.GetData()), got.Properties.MessageID)
	}
	if err := rcv.AcceptMessage(ctx, got); err != nil {
		t.Fatal(err)
	}
	fb, err := s.NewReceiver(ctx, "/messages/serviceBound/feedback", nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := fb.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fb.ReleaseMessage(ctx, first); err != nil {
		t.Fatal(err)
	}
	again, err := fb.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.GetData(), first.GetData()) {
		t.Fatalf("after release: %s, want the same batch %s", again.GetData(), first.GetData())
	}
	var recs []iothub.FeedbackRecord
	if err := json.Unmarshal(again.GetData(), &recs); err != nil || len(recs) != 1 || recs[0].OriginalMessageID != "dead0000-0000-0000-0000-000000000000" {
		t.Fatalf("feedback %s (%v)", again.GetData(), err)
	}
	if err := fb.AcceptMessage(ctx, again); err != nil {
		t.Fatal(err)
	}
	// Accepted: the hub completes the batch (asynchronously: the disposition needs no answer).
	for deadline := time.Now().Add(5 * time.Second); ; {
		st, err := e.hub.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingFeedbackCount == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending feedback 5 s after accept: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // polling the hub's state, with a deadline
	}
}

// A link authorized by a token detaches with amqp:unauthorized-access when the token expires,
// unless a put-token renewed it on the same connection.
func TestTokenExpiryAndRenewal(t *testing.T) {
	e := newEnv(t, hub.Config{})
	e.device("d")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	short := func() string { return e.policyToken("service", 2*time.Second) }
	expiring := session(t, e.dial(nil))
	if code, _ := putToken(t, expiring, hostName, short(), "1"); code != 200 {
		t.Fatal("put-token refused")
	}
	renewed := session(t, e.dial(nil))
	if code, _ := putToken(t, renewed, hostName, short(), "1"); code != 200 {
		t.Fatal("put-token refused")
	}
	sndExp, err := expiring.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	sndRen, err := renewed.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := putToken(t, renewed, "https://"+hostName, e.policyToken("service", time.Hour), "2"); code != 200 {
		t.Fatal("renewal refused")
	}
	// Wait for the first token's expiry: its link detaches (Send reports the detach error).
	var ae *goamqp.Error
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := sndExp.Send(ctx, sendTo("d", "x", nil), nil)
		var le *goamqp.LinkError
		if errors.As(err, &le) && errors.As(le.RemoteErr, &ae) && ae.Condition == "amqp:unauthorized-access" {
			break
		}
		// A transfer that arrives after the expiry and before the detach is refused with the
		// same condition (the message is not accepted); the detach follows.
		var refused *goamqp.Error
		if err != nil && !errors.As(err, &le) && !(errors.As(err, &refused) && refused.Condition == "amqp:unauthorized-access") {
			t.Fatalf("send on the expiring link: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("link still sending 3 s after its token expired (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond) // waiting for wall-clock token expiry
	}
	if err := sndRen.Send(ctx, sendTo("d", "x", nil), nil); err != nil {
		t.Fatalf("renewed link after the first token's expiry: %v", err)
	}
}

// SASL PLAIN with {policy}@sas.root.{hub} and a token: no CBS needed.
func TestSASLPlain(t *testing.T) {
	e := newEnv(t, hub.Config{})
	e.device("d")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := e.dial(&goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("service@sas.root.hub", e.policyToken("service", time.Hour))})
	snd, err := session(t, c).NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, sendTo("d", "x", nil), nil); err != nil {
		t.Fatal(err)
	}
	_, err = goamqp.Dial(ctx, "amqp://"+e.addr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("service@sas.root.hub", "SharedAccessSignature sr=hub.test&sig=AAAA&se=9999999999&skn=service")})
	if err == nil {
		t.Fatal("SASL PLAIN with a bad signature accepted")
	}
	// The user names the policy: a valid token of another policy is refused, so a log or a
	// client that shows the user shows whose rights the connection has.
	_, err = goamqp.Dial(ctx, "amqp://"+e.addr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("iothubowner@sas.root.hub", e.policyToken("service", time.Hour))})
	if err == nil {
		t.Fatal("SASL PLAIN as iothubowner with the service policy's token accepted")
	}
}

// A frame the server cannot read closes the connection with an AMQP error, not a silent drop.
func TestBadFrameClosesWithError(t *testing.T) {
	e := newEnv(t, hub.Config{})
	for _, tc := range []struct {
		name, cond string
		frame      []byte
	}{
		{"oversized", "amqp:connection:framing-error", []byte{0x7f, 0, 0, 0, 2, 0, 0, 0}},
		{"not-a-performative", "amqp:decode-error", []byte{0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x77, 0x45}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			open := []byte("AMQP\x00\x01\x00\x00" +
				"\x00\x00\x00\x17\x02\x00\x00\x00\x00\x53\x10\xc0\x0a\x01\xa1\x07client1")
			if _, err := nc.Write(append(open, tc.frame...)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(bufio.NewReader(nc))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, []byte("AMQP\x00\x01\x00\x00")) || !bytes.Contains(got, []byte(tc.cond)) {
				t.Fatalf("server sent %q, want its header, open, then close with %s", got, tc.cond)
			}
		})
	}
}

// A connection that puts no token is closed with amqp:unauthorized-access after AuthTimeout.
func TestUnauthenticatedConnectionClosed(t *testing.T) {
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: hostName}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := amqp.New(amqp.Options{Hub: h, HostName: hostName, AuthTimeout: 200 * time.Millisecond})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rcv.Receive(ctx, nil) // blocks until the server closes the connection
	var ce *goamqp.ConnError
	var ae *goamqp.Error
	if !errors.As(err, &ce) || !errors.As(ce.RemoteErr, &ae) || ae.Condition != "amqp:unauthorized-access" {
		t.Fatalf("idle unauthenticated connection: %v, want closed with amqp:unauthorized-access", err)
	}
}

// A peer silent beyond the idle-time-out the hub advertised is closed with amqp:connection:forced.
func TestIdleTimeoutClosesSilentPeer(t *testing.T) {
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: hostName}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := amqp.New(amqp.Options{Hub: h, HostName: hostName, IdleTimeout: 300 * time.Millisecond})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	open := []byte("AMQP\x00\x01\x00\x00" + "\x00\x00\x00\x17\x02\x00\x00\x00\x00\x53\x10\xc0\x0a\x01\xa1\x07client1")
	if _, err := nc.Write(open); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := io.ReadAll(nc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte("amqp:connection:forced")) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("after %v the server sent %q, want close with amqp:connection:forced after the idle timeout", time.Since(start), got)
	}
}

// Connections ended by bad frames leave nothing behind: no connection, no goroutine.
func TestBadConnectionsLeakNothing(t *testing.T) {
	e := newEnv(t, hub.Config{})
	before := runtime.NumGoroutine()
	open := []byte("AMQP\x00\x01\x00\x00" + "\x00\x00\x00\x17\x02\x00\x00\x00\x00\x53\x10\xc0\x0a\x01\xa1\x07client1")
	for i := range 20 {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		bad := [][]byte{{0x7f, 0, 0, 0, 2, 0, 0, 0}, []byte("HTTP/1.1"), {0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x77, 0x45}}[i%3]
		_, _ = nc.Write(append(open, bad...))
		_, _ = io.ReadAll(nc) // until the server closes
		_ = nc.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, g := e.srv.Connections(), runtime.NumGoroutine()
		if n == 0 && g <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after 20 bad connections: %d still served, %d goroutines (before: %d)", n, g, before)
		}
		time.Sleep(20 * time.Millisecond) // polling the server's state, with a deadline
	}
}
