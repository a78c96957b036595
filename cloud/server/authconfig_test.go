package server

import (
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/broker"
)

// The auth section (issue #17): defaults, and out-of-range values named by their YAML path.
func TestAuthConfig(t *testing.T) {
	d := Default()
	if time.Duration(d.Auth.MaxTokenLifetime) != 365*24*time.Hour || d.Auth.MaxUnauthenticated != broker.DefaultMaxUnauthenticated {
		t.Fatalf("defaults %+v", d.Auth)
	}
	if c, err := Parse(strings.NewReader("auth:\n  max_token_lifetime: 24h\n  max_unauthenticated: 8\n")); err != nil ||
		c.HubConfig().MaxTokenLifetime != 24*time.Hour || c.Auth.MaxUnauthenticated != 8 {
		t.Fatalf("parse: %+v %v", c.Auth, err)
	}
	for doc, want := range map[string]string{
		"auth:\n  max_unauthenticated: 0\n":  "auth.max_unauthenticated: 0 is out of range",
		"auth:\n  max_token_lifetime: 30s\n": "auth.max_token_lifetime: 30s is out of range",
	} {
		if _, err := Parse(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}
