package hub

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A CONNECT's client id and username name one identity: the same device and the same module (or
// none). A device's token covers its modules' resources, so a client id that adds or drops a
// module the username does not name must be refused before the token is looked at.
func TestAuthenticateClientIDModuleMustMatchUsername(t *testing.T) {
	h := newTestHub(t, testConfig())
	d := mustDevice(t, h, "dev1")
	tok, err := iothub.NewSASToken(iothub.DeviceResource(h.cfg.HostName, "dev1", ""), d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ clientID, module string }{
		{"dev1/m1", ""},   // the client id names a module, the username the device
		{"dev1", "m1"},    // the username names a module, the client id the device
		{"dev1/m1", "m2"}, // two different modules
	} {
		user := iothub.FormatUsername(h.cfg.HostName, "dev1", tc.module, nil)
		res, err := h.Authenticate(ctxT(t), AuthRequest{ClientID: tc.clientID, Username: user, Password: tok})
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "does not match") {
			t.Errorf("client id %q, username %q: %+v, %v; want ErrUnauthorized: does not match", tc.clientID, user, res, err)
		}
	}
}

// A token that outlives auth.max_token_lifetime is refused, and the error says when it expires:
// as an RFC 3339 time up to the last second of year 9999, and as "too far in the future" beyond
// (where a date would need five digits). A token expiring exactly at the limit is accepted.
func TestTokenLifetimeErrorNamesTheExpiry(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTokenLifetime = time.Hour
	h, clk := clockHub(t, cfg)
	d := mustDevice(t, h, "dev1")
	now := clk.Now()
	auth := func(exp time.Time) error {
		t.Helper()
		tok, err := iothub.NewSASToken(iothub.DeviceResource(h.cfg.HostName, "dev1", ""), d.Authentication.SymmetricKey.PrimaryKey, "", exp)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Authenticate(ctxT(t), AuthRequest{ClientID: "dev1", Username: iothub.FormatUsername(h.cfg.HostName, "dev1", "", nil), Password: tok})
		return err
	}
	if err := auth(now.Add(time.Hour)); err != nil {
		t.Errorf("token expiring exactly max_token_lifetime from now: %v", err)
	}
	for exp, want := range map[time.Time]string{
		now.Add(time.Hour + time.Second):                 "expires at " + now.Add(time.Hour+time.Second).Format(time.RFC3339) + ",",
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC): "expires at 9999-12-31T23:59:59Z,",
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC):     "expires too far in the future (after year 9999),",
	} {
		err := auth(exp)
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "max_token_lifetime") {
			t.Errorf("token expiring %v: %v; want ErrUnauthorized mentioning %q and max_token_lifetime", exp, err, want)
		}
	}
}

// Renewing a policy key revokes at once what the replaced key signed: the next Authenticate
// refuses a token signed with it, and accepts one signed with the new key. A swap replaces
// nothing, so tokens signed with either old key keep working.
func TestRenewedPolicyKeyRefusesTokensOfTheReplacedKey(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	auth := func(key string) error {
		t.Helper()
		tok, err := iothub.NewSASToken(h.cfg.HostName, key, "device", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Authenticate(ctxT(t), AuthRequest{ClientID: "dev1", Username: iothub.FormatUsername(h.cfg.HostName, "dev1", "", nil), Password: tok})
		return err
	}
	old, _ := h.Policy("device")
	for _, k := range []string{old.PrimaryKey, old.SecondaryKey} {
		if err := auth(k); err != nil {
			t.Fatalf("before renewal: %v", err)
		}
	}
	p, err := h.RenewPolicyKey(ctxT(t), "device", RenewPrimary)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth(old.PrimaryKey); !errors.Is(err, iothub.ErrTokenSignature) {
		t.Errorf("token of the replaced primary key: %v; want ErrTokenSignature", err)
	}
	if err := auth(p.PrimaryKey); err != nil {
		t.Errorf("token of the new primary key: %v", err)
	}
	if err := auth(old.SecondaryKey); err != nil {
		t.Errorf("token of the kept secondary key: %v", err)
	}
	if _, err := h.RenewPolicyKey(ctxT(t), "device", RenewSwap); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{p.PrimaryKey, old.SecondaryKey} {
		if err := auth(k); err != nil {
			t.Errorf("after a swap: %v", err)
		}
	}
	s, err := h.RenewPolicyKey(ctxT(t), "device", RenewSecondary) // the secondary is now p.PrimaryKey
	if err != nil {
		t.Fatal(err)
	}
	if err := auth(p.PrimaryKey); !errors.Is(err, iothub.ErrTokenSignature) {
		t.Errorf("token of the replaced secondary key: %v; want ErrTokenSignature", err)
	}
	for _, k := range []string{s.PrimaryKey, s.SecondaryKey} {
		if err := auth(k); err != nil {
			t.Errorf("after renewing the secondary: %v", err)
		}
	}
}

// A device's new keys (PutDevice) take effect at the next Authenticate: a token of the replaced
// key is refused, one of the new key accepted.
func TestDeviceKeyChangeRefusesTokensOfTheReplacedKey(t *testing.T) {
	h := newTestHub(t, testConfig())
	d := mustDevice(t, h, "dev1")
	auth := func(key string) error {
		t.Helper()
		tok, err := iothub.NewSASToken(iothub.DeviceResource(h.cfg.HostName, "dev1", ""), key, "", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Authenticate(ctxT(t), AuthRequest{ClientID: "dev1", Username: iothub.FormatUsername(h.cfg.HostName, "dev1", "", nil), Password: tok})
		return err
	}
	old := d.Authentication.SymmetricKey
	d.Authentication.SymmetricKey.PrimaryKey = "bmV3IHByaW1hcnkga2V5IGZvciBkZXYxIDEyMzQ1Ng=="
	if _, _, err := h.PutDevice(ctxT(t), d, "*"); err != nil {
		t.Fatal(err)
	}
	if err := auth(old.PrimaryKey); !errors.Is(err, iothub.ErrTokenSignature) {
		t.Errorf("token of the replaced primary key: %v; want ErrTokenSignature", err)
	}
	for _, k := range []string{d.Authentication.SymmetricKey.PrimaryKey, old.SecondaryKey} {
		if err := auth(k); err != nil {
			t.Errorf("token of a current key: %v", err)
		}
	}
}
