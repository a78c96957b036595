package broker_test

import (
	"context"
	"testing"
	"time"

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
