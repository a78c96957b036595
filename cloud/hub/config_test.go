package hub

import (
	"strings"
	"testing"
	"time"
)

// Every range Validate enforces, as configs/hub.yaml documents it, is inclusive at both ends: the
// bound itself is accepted, one step past it is refused naming the field.
func TestConfigRangesAreInclusive(t *testing.T) {
	const day = 24 * time.Hour
	type bound struct {
		key  string
		set  func(*Config, int64) // a duration in ns, or a count
		lo   int64
		hi   int64
		step int64
	}
	dur := func(f func(*Config) *time.Duration) func(*Config, int64) {
		return func(c *Config, v int64) { *f(c) = time.Duration(v) }
	}
	num := func(f func(*Config) *int) func(*Config, int64) {
		return func(c *Config, v int64) { *f(c) = int(v) }
	}
	ns := func(d time.Duration) int64 { return int64(d) }
	bounds := []bound{
		// min_ttl's upper bound is checked with max_ttl and default_ttl raised along with it.
		{"lock_timeout", dur(func(c *Config) *time.Duration { return &c.LockTimeout }), ns(100 * time.Millisecond), ns(day), 1},
		{"max_delivery_count", num(func(c *Config) *int { return &c.MaxDeliveryCount }), 1, 100, 1},
		{"max_queue_depth", num(func(c *Config) *int { return &c.MaxQueueDepth }), 1, 100000, 1},
		{"max_in_flight", num(func(c *Config) *int { return &c.MaxInFlight }), 1, 65535, 1},
		{"feedback_batch_size", num(func(c *Config) *int { return &c.FeedbackBatchSize }), 1, 10000, 1},
		{"feedback_interval", dur(func(c *Config) *time.Duration { return &c.FeedbackInterval }), ns(10 * time.Millisecond), ns(time.Hour), 1},
		{"feedback_ttl", dur(func(c *Config) *time.Duration { return &c.FeedbackTTL }), ns(time.Second), ns(30 * day), 1},
		{"feedback_lock_timeout", dur(func(c *Config) *time.Duration { return &c.FeedbackLockTimeout }), ns(100 * time.Millisecond), ns(day), 1},
		{"feedback_max_delivery_count", num(func(c *Config) *int { return &c.FeedbackMaxDeliveryCount }), 1, 100, 1},
		{"settled_retention", dur(func(c *Config) *time.Duration { return &c.SettledRetention }), ns(time.Second), ns(365 * day), 1},
		{"max_token_lifetime", dur(func(c *Config) *time.Duration { return &c.MaxTokenLifetime }), ns(time.Minute), ns(10 * 365 * day), 1},
		{"max_ttl", dur(func(c *Config) *time.Duration { return &c.MaxTTL }), ns(time.Hour), ns(365 * day), 1},   // lo: the default TTL
		{"min_ttl", dur(func(c *Config) *time.Duration { return &c.MinTTL }), ns(time.Second), ns(time.Hour), 1}, // hi: the default TTL
	}
	for _, b := range bounds {
		for _, tc := range []struct {
			v  int64
			ok bool
		}{{b.lo, true}, {b.hi, true}, {b.lo - b.step, false}, {b.hi + b.step, false}} {
			c := Config{}.Defaults()
			b.set(&c, tc.v)
			err := c.Validate()
			if tc.ok && err != nil {
				t.Errorf("%s = %d: %v, want accepted", b.key, tc.v, err)
			}
			// max_ttl below the default TTL and min_ttl above it are refused as default_ttl.
			if !tc.ok && (err == nil || !strings.HasPrefix(err.Error(), b.key+":") && !strings.HasPrefix(err.Error(), "default_ttl:")) {
				t.Errorf("%s = %d: %v, want refused naming %s", b.key, tc.v, err, b.key)
			}
		}
	}
	// The TTL bounds' own ends: min_ttl up to 48 h and max_ttl down to min_ttl, with the default
	// TTL between them.
	c := Config{MinTTL: 48 * time.Hour, MaxTTL: 48 * time.Hour, DefaultTTL: 48 * time.Hour}.Defaults()
	if err := c.Validate(); err != nil {
		t.Errorf("min_ttl = max_ttl = default_ttl = 48h: %v", err)
	}
	c.MinTTL++
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "min_ttl:") {
		t.Errorf("min_ttl = 48h + 1ns: %v, want refused", err)
	}

	host := strings.Repeat("a", 255)
	if err := (Config{HostName: host}).Defaults().Validate(); err != nil {
		t.Errorf("a 255-byte hostname: %v", err)
	}
	if err := (Config{HostName: host + "a"}).Defaults().Validate(); err == nil || !strings.HasPrefix(err.Error(), "hostname:") {
		t.Errorf("a 256-byte hostname: %v, want refused", err)
	}
}

// The defaults are those configs/hub.yaml documents.
func TestConfigDefaultsAreTheDocumentedOnes(t *testing.T) {
	d := Config{}.Defaults()
	if d.SettledRetention != 24*time.Hour || d.MaxTokenLifetime != 8760*time.Hour || d.FeedbackTTL != time.Hour ||
		d.FeedbackLockTimeout != time.Minute || d.MaxInFlight != 16 || d.FeedbackMaxDeliveryCount != 10 {
		t.Fatalf("defaults %+v", d)
	}
}

// An unset default_ttl follows a max_ttl below it or a min_ttl above it; one that was set is
// never changed behind the operator's back: out of range, it is refused naming default_ttl.
func TestDefaultTTLStaysInsideTheTTLRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want time.Duration // 0: refused
	}{
		{"max_ttl below the default", Config{MaxTTL: 30 * time.Minute}, 30 * time.Minute},
		{"min_ttl = max_ttl below the default", Config{MinTTL: 30 * time.Minute, MaxTTL: 30 * time.Minute}, 30 * time.Minute},
		{"min_ttl above the default", Config{MinTTL: 2 * time.Hour}, 2 * time.Hour},
		{"default_ttl set above max_ttl", Config{DefaultTTL: 72 * time.Hour}, 0},
		{"default_ttl set below min_ttl", Config{DefaultTTL: 30 * time.Second}, 0},
	} {
		c := tc.in.Defaults()
		err := c.Validate()
		switch {
		case tc.want == 0 && (err == nil || !strings.HasPrefix(err.Error(), "default_ttl:")):
			t.Errorf("%s: default_ttl %v, %v; want refused naming default_ttl", tc.name, c.DefaultTTL, err)
		case tc.want != 0 && (err != nil || c.DefaultTTL != tc.want):
			t.Errorf("%s: default_ttl %v, %v; want %v", tc.name, c.DefaultTTL, err, tc.want)
		}
	}
}
