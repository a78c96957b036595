package attack

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// policyConnStr runs `c2d-hub connection-string --policy NAME` on the hub's data directory.
func policyConnStr(t *testing.T, h interface{ DataDir() string }, name string) iothub.ServiceConnectionString {
	t.Helper()
	out, err := exec.Command(hubBin, "connection-string", "--data", h.DataDir(), "--policy", name).Output()
	if err != nil {
		t.Fatalf("c2d-hub connection-string --policy %s: %v", name, err)
	}
	cs, err := iothub.ParseServiceConnectionString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

type dataDir string

func (d dataDir) DataDir() string { return string(d) }

// Issue #17, Medium: changing a device's keys left its live session connected (it kept
// receiving). Now the session whose token no longer verifies is dropped, and the old token is
// refused on reconnect; a session signed with the key that stayed is kept.
func TestDeviceKeyChangeDropsSession(t *testing.T) {
	h := startHub(t, "")
	cs := device(t, h, "rekey-dev")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rekey := func(primary string) {
		t.Helper()
		d, err := h.Client.GetDevice(ctx, cs.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		d.Authentication.SymmetricKey.PrimaryKey = primary
		if _, err := h.Client.PutDevice(ctx, d, "*"); err != nil {
			t.Fatal(err)
		}
	}
	rc, old, err := deviceConnect(t, h.Endpoints.MQTT, cs)
	if err != nil || rc != 0 {
		t.Fatalf("CONNECT: %#x %v", rc, err)
	}
	defer old.Close()
	// The primary key leaked: give the device a new one.
	rekey("bmV3IHByaW1hcnkga2V5IGZvciByZWtleQ==")
	if !closedWithin(old, 10*time.Second) {
		t.Fatal("the session signed with the replaced key is still connected 10 s after the key change")
	}
	// The hub's stderr reaches the test through a pipe: the line may trail the close.
	eventually(t, "the hub logs why it dropped the session", func() bool {
		return strings.Contains(h.Log.String(), "no longer verifies after a key change")
	})
	if rc, c, err := deviceConnect(t, h.Endpoints.MQTT, cs); err != nil || rc != 0x04 {
		if c != nil {
			c.Close()
		}
		t.Fatalf("reconnect with the old key: %#x %v, want CONNACK 0x04", rc, err)
	}
	d, err := h.Client.GetDevice(ctx, cs.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	secondary := iothub.DeviceConnectionString{HostName: hostName, DeviceID: cs.DeviceID, SharedAccessKey: d.Authentication.SymmetricKey.SecondaryKey}
	rc, kept, err := deviceConnect(t, h.Endpoints.MQTT, secondary)
	if err != nil || rc != 0 {
		t.Fatalf("CONNECT with the secondary key: %#x %v", rc, err)
	}
	defer kept.Close()
	rekey("YW5vdGhlciBwcmltYXJ5IGtleSBmb3IgcmVrZXk=")
	if closedWithin(kept, time.Second) {
		t.Fatal("the session signed with the unchanged secondary key was dropped")
	}
}

// Issue #17, Medium: policy keys could not be rotated at all. `c2d-hub policy renew-key` on the
// running hub replaces one: a device session that connected with a token of that policy is
// dropped, the old key's API tokens are refused, and the printed connection string works. Through
// the API only iothubowner may renew.
func TestPolicyKeyRenewal(t *testing.T) {
	h := startHub(t, "")
	dd := dataDir(h.Data)
	cs := device(t, h, "pol-dev")
	devPol := policyConnStr(t, dd, "device")
	tok, err := iothub.NewSASToken(iothub.DeviceResource(hostName, cs.DeviceID, ""), devPol.SharedAccessKey, "device", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rc, sess, err := connack(h.Endpoints.MQTT, connectPacket(cs.DeviceID, iothub.FormatUsername(hostName, cs.DeviceID, "", nil), tok))
	if err != nil || rc != 0 {
		t.Fatalf("CONNECT with a device-policy token: %#x %v", rc, err)
	}
	defer sess.Close()

	out, err := exec.Command(hubBin, "policy", "renew-key", "device", "--data", h.Data).CombinedOutput()
	if err != nil {
		t.Fatalf("c2d-hub policy renew-key device: %v\n%s", err, out)
	}
	if !closedWithin(sess, 10*time.Second) {
		t.Fatal("the session signed with the device policy's old key is still connected")
	}
	newPol := policyConnStr(t, dd, "device")
	if newPol.SharedAccessKey == devPol.SharedAccessKey || !strings.Contains(string(out), newPol.String()) {
		t.Fatalf("renew-key printed %q; the store has %s (old key %s)", out, newPol, devPol.SharedAccessKey)
	}

	// The service policy through the API: the old key's client is refused afterwards; a
	// non-owner policy may not renew.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := apiclient.New(policyConnStr(t, dd, "service"), apiclient.Options{Endpoint: "http://" + h.Endpoints.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Status(ctx); err != nil {
		t.Fatal(err)
	}
	var ie *iothub.Error
	if _, err := svc.RenewPolicyKey(ctx, "service", "primary"); !errors.As(err, &ie) || ie.Code.HTTPStatus() != 401 {
		t.Fatalf("service renewing a key: %v, want 401", err)
	}
	pk, err := h.Client.RenewPolicyKey(ctx, "service", "primary")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Status(ctx); !errors.As(err, &ie) || ie.Code.HTTPStatus() != 401 {
		t.Fatalf("old service key after renewal: %v, want 401", err)
	}
	fresh, _ := apiclient.New(iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: "service", SharedAccessKey: pk.PrimaryKey},
		apiclient.Options{Endpoint: "http://" + h.Endpoints.HTTP})
	if _, err := fresh.Status(ctx); err != nil {
		t.Fatalf("new service key: %v", err)
	}
}

// Issue #17, Low: an unknown device got CONNACK 0x05 and a known one with a bad token 0x04, so a
// stranger could list registered device ids. Both now get 0x04.
func TestNoDeviceIDEnumeration(t *testing.T) {
	h := startHub(t, "")
	known := device(t, h, "enum-known")
	wrongKey := "d3Jvbmcga2V5IGZvciBlbnVtZXJhdGlvbg=="
	codes := map[string]byte{}
	for _, id := range []string{known.DeviceID, "enum-unknown"} {
		cs := iothub.DeviceConnectionString{HostName: hostName, DeviceID: id, SharedAccessKey: wrongKey}
		rc, c, err := deviceConnect(t, h.Endpoints.MQTT, cs)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		c.Close()
		codes[id] = rc
	}
	if codes[known.DeviceID] != 0x04 || codes["enum-unknown"] != 0x04 {
		t.Fatalf("CONNACK codes %v: want 0x04 for both a known device with a wrong key and an unknown one", codes)
	}
}
