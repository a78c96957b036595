package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/amqp"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// tokenLog records the server's token results in order.
type tokenLog struct {
	mu  sync.Mutex
	got []amqp.TokenResult
}

func (l *tokenLog) opt(o *amqp.Options) {
	o.Events.Token = func(r amqp.TokenResult) {
		l.mu.Lock()
		l.got = append(l.got, r)
		l.mu.Unlock()
	}
}

func (l *tokenLog) results() []amqp.TokenResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func (e *env) deviceToken(d iothub.Device, expiry time.Time) string {
	e.t.Helper()
	tok, err := iothub.NewSASToken(hostName+"/devices/"+d.DeviceID, d.Authentication.SymmetricKey.PrimaryKey, "", expiry)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// A put-token's name is its audience: the same resource named differently (percent-encoded, with
// a scheme or a trailing slash, or no name at all, which falls back to the token's resource) is a
// renewal; two names are two grants even when their tokens are for the same resource.
func TestPutTokenAudienceNaming(t *testing.T) {
	var log tokenLog
	e := newEnv(t, hub.Config{}, log.opt)
	d := e.device("d")
	s := session(t, e.dial(nil))
	exp := time.Now().Add(time.Hour)
	for i, name := range []string{"hub.test%2Fdevices%2Fd", "amqps://hub.test/devices/d/", "", "first", "second"} {
		tok := e.deviceToken(d, exp)
		if name == "first" || name == "second" {
			tok = e.policyToken("service", time.Hour)
		}
		if code, desc := putToken(t, s, name, tok, fmt.Sprint(i)); code != 200 {
			t.Fatalf("put-token %q: %d %s", name, code, desc)
		}
	}
	want := []amqp.TokenResult{amqp.TokenAccepted, amqp.TokenRenewed, amqp.TokenRenewed, amqp.TokenAccepted, amqp.TokenAccepted}
	if got := log.results(); !slices.Equal(got, want) {
		t.Fatalf("token results %v, want %v", got, want)
	}
}

// A grant whose token expired by the server's clock, still on the connection because its timer
// has not fired, does not hide a live grant for the same device on that connection.
func TestExpiredGrantDoesNotHideALiveOne(t *testing.T) {
	var offset atomic.Int64
	e := newEnv(t, hub.Config{}, func(o *amqp.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	d := e.device("d")
	s := session(t, e.dial(nil))
	// Several expiring grants, so that whatever order they are looked at in, the live one is
	// rarely first.
	for i := range 12 {
		if code, desc := putToken(t, s, fmt.Sprintf("old-%d", i), e.deviceToken(d, time.Now().Add(time.Hour)), fmt.Sprint(i)); code != 200 {
			t.Fatalf("put-token: %d %s", code, desc)
		}
	}
	if code, desc := putToken(t, s, "live", e.deviceToken(d, time.Now().Add(3*time.Hour)), "live"); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	offset.Store(int64(2 * time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.NewReceiver(ctx, "/devices/d/messages/devicebound", nil); err != nil {
		t.Fatalf("receiver with one live grant among expired ones: %v", err)
	}
	offset.Store(int64(4 * time.Hour))
	var ae *goamqp.Error
	if _, err := s.NewReceiver(ctx, "/devices/d/messages/devicebound", nil); !errors.As(err, &ae) || ae.Condition != "amqp:unauthorized-access" {
		t.Fatalf("receiver once every grant expired: %v, want amqp:unauthorized-access", err)
	}
}

// Expiry is judged by the server's clock; the timer only prompts the check. A timer that fires
// while the server's clock says the token is still valid (a renewal raced it, or the clocks
// differ) leaves the links alone.
func TestTokenTimerDefersToTheServerClock(t *testing.T) {
	e := newEnv(t, hub.Config{}, func(o *amqp.Options) {
		o.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	})
	e.device("d")
	s := session(t, e.dial(nil))
	if code, desc := putToken(t, s, hostName, e.policyToken("service", time.Second), "1"); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snd, err := s.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Past the token's expiry by the wall clock, which its timer runs on: an absence (no detach)
	// has no event to wait for.
	time.Sleep(1500 * time.Millisecond)
	if err := snd.Send(ctx, sendTo("d", "x", nil), nil); err != nil {
		t.Fatalf("send after the wall-clock expiry, with the server's clock an hour behind: %v", err)
	}
}

// A device's own token may name its resource with a scheme (amqps://host/devices/id), as the
// audience may: the device is the one after the scheme.
func TestDeviceTokenResourceWithScheme(t *testing.T) {
	e := newEnv(t, hub.Config{})
	d := e.device("d")
	s := session(t, e.dial(nil))
	tok, err := iothub.NewSASToken("amqps://"+hostName+"/devices/d", d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := putToken(t, s, "amqps://"+hostName+"/devices/d", tok, "1"); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.NewReceiver(ctx, "/devices/d/messages/devicebound", nil); err != nil {
		t.Fatalf("receiver: %v", err)
	}
}
