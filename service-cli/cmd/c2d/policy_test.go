package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// `c2d policy renew-key` (issue #17): the owner renews a policy's key; the printed connection
// string works, the old one is refused, and a policy without every right may not renew.
func TestPolicyRenewKey(t *testing.T) {
	old, err := connectionString(hub, "registryReadWrite")
	if err != nil {
		t.Fatal(err)
	}
	oldEnv := append(baseEnv(), "C2D_CONNECTION_STRING="+old, "C2D_ENDPOINT=http://"+hub.Endpoints.HTTP)
	must(t, 0, "device", "list") // owner works
	if r := runEnv(t, oldEnv, "policy", "renew-key", "registryReadWrite"); r.code == 0 || !strings.Contains(r.stderr, "iothubowner") {
		t.Errorf("registryReadWrite renewing its own key: %s; want a refusal naming iothubowner", r)
	}
	var out struct {
		Policy, Renewed, ConnectionString string
		Rights                            []string
	}
	r := must(t, 0, "policy", "renew-key", "registryReadWrite", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	stored, err := connectionString(hub, "registryReadWrite")
	if err != nil {
		t.Fatal(err)
	}
	if out.Policy != "registryReadWrite" || out.Renewed != "primary" || out.ConnectionString != stored || stored == old {
		t.Fatalf("renew-key -o json = %+v; the store has %s (old %s)", out, stored, old)
	}
	if r := runEnv(t, oldEnv, "device", "list"); r.code == 0 {
		t.Errorf("the old registryReadWrite key still works: %s", r)
	}
	newEnv := append(baseEnv(), "C2D_CONNECTION_STRING="+stored, "C2D_ENDPOINT=http://"+hub.Endpoints.HTTP)
	if r := runEnv(t, newEnv, "device", "list"); r.code != 0 {
		t.Errorf("the renewed key: %s", r)
	}
	if r := runEnv(t, hubEnv(), "policy", "renew-key", "nope"); r.code == 0 || !strings.Contains(r.stderr, `no shared access policy "nope"`) {
		t.Errorf("unknown policy: %s", r)
	}
}
