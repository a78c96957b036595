package hub

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func TestRenewPolicyKey(t *testing.T) {
	dir := t.TempDir()
	h := openHub(t, dir, testConfig())
	var changed []string
	h.OnCredentialsChanged(func(id string) { changed = append(changed, "["+id+"]") })
	before, _ := h.Policy("service")

	p, err := h.RenewPolicyKey(ctxT(t), "service", RenewPrimary)
	if err != nil {
		t.Fatal(err)
	}
	if p.PrimaryKey == before.PrimaryKey || p.SecondaryKey != before.SecondaryKey || checkKey("k", p.PrimaryKey) != nil {
		t.Fatalf("renew primary: %+v from %+v", p, before)
	}
	s, err := h.RenewPolicyKey(ctxT(t), "service", RenewSecondary)
	if err != nil || s.PrimaryKey != p.PrimaryKey || s.SecondaryKey == p.SecondaryKey {
		t.Fatalf("renew secondary: %+v %v", s, err)
	}
	w, err := h.RenewPolicyKey(ctxT(t), "service", RenewSwap)
	if err != nil || w.PrimaryKey != s.SecondaryKey || w.SecondaryKey != s.PrimaryKey {
		t.Fatalf("swap: %+v %v", w, err)
	}
	if got := strings.Join(changed, ""); got != "[][][]" {
		t.Errorf("OnCredentialsChanged calls %q, want three for every session", got)
	}
	if _, err := h.RenewPolicyKey(ctxT(t), "nope", RenewPrimary); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown policy: %v", err)
	}
	if _, err := h.RenewPolicyKey(ctxT(t), "service", "both"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad which: %v", err)
	}
	// A service token signed with the old key no longer verifies; the renewed keys are durable.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openHub(t, dir, testConfig())
	if got, _ := h.Policy("service"); got.PrimaryKey != w.PrimaryKey || got.SecondaryKey != w.SecondaryKey {
		t.Fatalf("after reopen: %+v, want %+v", got, w)
	}
	if ps, err := ReadPolicies(ctxT(t), dir); err != nil || !containsKey(ps, w.PrimaryKey) {
		t.Fatalf("ReadPolicies: %v %v", ps, err)
	}
}

func containsKey(ps []Policy, k string) bool {
	for _, p := range ps {
		if p.PrimaryKey == k {
			return true
		}
	}
	return false
}

func TestDeviceKeyChangeAnnounced(t *testing.T) {
	h := newTestHub(t, testConfig())
	d := mustDevice(t, h, "dev1")
	var changed []string
	h.OnCredentialsChanged(func(id string) { changed = append(changed, id) })
	d.StatusReason = "note only"
	if _, _, err := h.PutDevice(ctxT(t), d, "*"); err != nil {
		t.Fatal(err)
	}
	if len(changed) != 0 {
		t.Fatalf("OnCredentialsChanged calls %q after an update that kept both keys, want none", changed)
	}
	d.Authentication.SymmetricKey.SecondaryKey = "c2Vjb25kYXJ5IGtleSByZXBsYWNlZA=="
	if _, _, err := h.PutDevice(ctxT(t), d, "*"); err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0] != "dev1" {
		t.Fatalf("OnCredentialsChanged calls %q, want one for dev1 (a change without new keys is not one)", changed)
	}
}

func TestTokenLifetimeBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTokenLifetime = time.Hour
	h := newTestHub(t, cfg)
	d := mustDevice(t, h, "dev1")
	for ttl, ok := range map[time.Duration]bool{59 * time.Minute: true, 61 * time.Minute: false, 1 << 62: false} {
		exp := time.Now().Add(ttl)
		if ttl == 1<<62 {
			exp = time.Unix(1<<62, 0)
		}
		tok, err := iothub.NewSASToken(iothub.DeviceResource(h.cfg.HostName, "dev1", ""), d.Authentication.SymmetricKey.PrimaryKey, "", exp)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Authenticate(ctxT(t), AuthRequest{ClientID: "dev1", Username: iothub.FormatUsername(h.cfg.HostName, "dev1", "", nil), Password: tok})
		if ok && err != nil || !ok && (!errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "max_token_lifetime")) {
			t.Errorf("token for %v: %v", ttl, err)
		}
	}
}
