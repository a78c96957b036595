package broker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// A device's key changed (it leaked): the session that connected with the old key is dropped, and
// another device's session is left alone.
func TestDeviceKeyChangeDropsOnlyThatDevicesSession(t *testing.T) {
	e := newEnv(t, envOpt{})
	leaked, other := e.device("pi-leaked"), e.device("pi-other")
	old := e.connect(leaked, clientOpts{clean: true})
	kept := e.connect(other, clientOpts{clean: true})
	kept.subscribeC2D("pi-other")
	leaked.Authentication.SymmetricKey.PrimaryKey = "bmV3IHByaW1hcnkga2V5IGZvciByZWtleQ=="
	if _, _, err := e.hub.PutDevice(context.Background(), leaked, "*"); err != nil {
		t.Fatal(err)
	}
	old.waitLost()
	res := e.send("pi-other", iothub.SendRequest{Body: []byte("still here")})
	if _, msg := kept.next(); msg.MessageID != res.MessageID {
		t.Fatalf("the other device got %q", msg.MessageID)
	}
}

// A shared access policy's key was renewed: a device session that connected with a token of that
// policy is dropped.
func TestPolicyKeyRenewalDropsSessionsSignedWithIt(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-policy")
	pol, ok := e.hub.Policy("device")
	if !ok {
		t.Fatal("no device policy")
	}
	tok, err := iothub.NewSASToken(iothub.DeviceResource(testHost, "pi-policy", ""), pol.PrimaryKey, pol.Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cl := e.connect(d, clientOpts{clean: true, password: tok})
	if _, err := e.hub.RenewPolicyKey(context.Background(), "device", hub.RenewPrimary); err != nil {
		t.Fatal(err)
	}
	cl.waitLost()
}

// heldAuth is the hub, with one client id's CONNECT held after the hub verified its token and
// before the answer reaches the broker; every other client id's Authenticate calls are reported.
type heldAuth struct {
	*hub.Hub
	hold     string
	held     chan struct{} // closed once the held CONNECT was verified
	release  chan struct{}
	once     sync.Once
	rechecks chan string // the client ids of the other calls
}

func (a *heldAuth) Authenticate(ctx context.Context, req hub.AuthRequest) (hub.AuthResult, error) {
	res, err := a.Hub.Authenticate(ctx, req)
	if req.ClientID != a.hold {
		select {
		case a.rechecks <- req.ClientID:
		default:
		}
		return res, err
	}
	a.once.Do(func() {
		close(a.held)
		<-a.release
	})
	return res, err
}

// A policy key renewed while a device connects with a token of that policy: the hub verified the
// token with the old key, and the broker's re-check of live sessions ran before the session was
// established, so it did not see it. The session is checked again once it is established, and
// dropped.
func TestKeyChangeDuringConnectDropsTheSession(t *testing.T) {
	a := &heldAuth{hold: "pi-late", held: make(chan struct{}), release: make(chan struct{}), rechecks: make(chan string, 16)}
	e := newEnv(t, envOpt{core: func(h *hub.Hub) broker.Core { a.Hub = h; return a }})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(a.release) }) }
	t.Cleanup(release) // before the broker closes: a CONNECT still held would hold its Close
	other := e.device("pi-other")
	kept := e.connect(other, clientOpts{clean: true})
	eventually(t, "pi-other's session", func() bool { return e.b.Connected() == 1 })
	select {
	case <-a.rechecks: // pi-other's own CONNECT
	case <-time.After(wait):
		t.Fatal("pi-other's CONNECT was not authenticated")
	}

	late := e.device("pi-late")
	pol, ok := e.hub.Policy("device")
	if !ok {
		t.Fatal("no device policy")
	}
	tok, err := iothub.NewSASToken(iothub.DeviceResource(testHost, "pi-late", ""), pol.PrimaryKey, pol.Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cl := e.start(late, clientOpts{clean: true, password: tok})
	select {
	case <-a.held:
	case <-time.After(wait):
		t.Fatal("the CONNECT never reached Authenticate")
	}
	if _, err := e.hub.RenewPolicyKey(context.Background(), "device", hub.RenewPrimary); err != nil {
		t.Fatal(err)
	}
	// The re-check of the live sessions has taken its list: it is checking pi-other's token.
	select {
	case id := <-a.rechecks:
		if id != "pi-other" {
			t.Fatalf("re-check of %q, want pi-other", id)
		}
	case <-time.After(wait):
		t.Fatal("the key change re-checked no session")
	}
	release()
	if !cl.tok.WaitTimeout(wait) || cl.tok.Error() != nil {
		t.Fatalf("connect pi-late: %v", cl.tok.Error())
	}
	cl.waitLost()
	if !kept.c.IsConnectionOpen() {
		t.Fatal("pi-other, which connected with its device key, was dropped")
	}
}
