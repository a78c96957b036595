package hub

import (
	"fmt"
	"strings"
	"time"
)

// Azure's values (azure-c2d.md §4, §5), used for every zero field of Config.
const (
	DefaultHostName                 = "localhost"
	DefaultTTL                      = time.Hour
	DefaultMinTTL                   = time.Minute
	DefaultMaxTTL                   = 48 * time.Hour
	DefaultLockTimeout              = time.Minute
	DefaultMaxDeliveryCount         = 10
	DefaultMaxQueueDepth            = 50
	DefaultMaxInFlight              = 16
	DefaultFeedbackBatchSize        = 64
	DefaultFeedbackInterval         = time.Second // Azure: 15 s; c2d: short enough for interactive use
	DefaultFeedbackTTL              = time.Hour
	DefaultFeedbackLockTimeout      = time.Minute
	DefaultFeedbackMaxDeliveryCount = 10
	DefaultSettledRetention         = 24 * time.Hour
	DefaultMaxTokenLifetime         = 365 * 24 * time.Hour
)

// Lower bounds accepted by Validate. They are below Azure's fixed values on purpose: tests and labs
// need short locks and TTLs; production keeps Azure's defaults by leaving the fields unset.
const (
	minAllowedTTL      = time.Second
	minAllowedLock     = 100 * time.Millisecond
	minAllowedInterval = 10 * time.Millisecond
)

// Defaults returns Azure's values for every zero field of c.
func (c Config) Defaults() Config {
	defaultTTLUnset := c.DefaultTTL == 0
	setDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	setInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	if c.HostName == "" {
		c.HostName = DefaultHostName
	}
	setDur(&c.DefaultTTL, DefaultTTL)
	setDur(&c.MinTTL, DefaultMinTTL)
	setDur(&c.MaxTTL, DefaultMaxTTL)
	setDur(&c.LockTimeout, DefaultLockTimeout)
	setInt(&c.MaxDeliveryCount, DefaultMaxDeliveryCount)
	setInt(&c.MaxQueueDepth, DefaultMaxQueueDepth)
	setInt(&c.MaxInFlight, DefaultMaxInFlight)
	setInt(&c.FeedbackBatchSize, DefaultFeedbackBatchSize)
	setDur(&c.FeedbackInterval, DefaultFeedbackInterval)
	setDur(&c.FeedbackTTL, DefaultFeedbackTTL)
	setDur(&c.FeedbackLockTimeout, DefaultFeedbackLockTimeout)
	setInt(&c.FeedbackMaxDeliveryCount, DefaultFeedbackMaxDeliveryCount)
	setDur(&c.SettledRetention, DefaultSettledRetention)
	setDur(&c.MaxTokenLifetime, DefaultMaxTokenLifetime)
	// A max_ttl below the default TTL, or a min_ttl above it, must not make an unset default_ttl
	// invalid: keep the default inside [min_ttl, max_ttl]. A default_ttl that was set is left as
	// it is: if it is out of range, Validate says so, naming it.
	if defaultTTLUnset && c.MinTTL <= c.MaxTTL {
		c.DefaultTTL = min(max(c.DefaultTTL, c.MinTTL), c.MaxTTL)
	}
	return c
}

// Validate reports the first out-of-range field, named as in configs/hub.yaml. Call it on
// c.Defaults(): a zero field is an error here.
func (c Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: "+format, append([]any{key}, args...)...)
	}
	durIn := func(key string, v, lo, hi time.Duration) error {
		if v < lo || v > hi {
			return bad(key, "%v is out of range [%v, %v]", v, lo, hi)
		}
		return nil
	}
	intIn := func(key string, v, lo, hi int) error {
		if v < lo || v > hi {
			return bad(key, "%d is out of range [%d, %d]", v, lo, hi)
		}
		return nil
	}
	if c.HostName == "" {
		return bad("hostname", "must be set")
	}
	if len(c.HostName) > 255 || strings.ContainsAny(c.HostName, "/?#@ \t\r\n;") {
		return bad("hostname", "%q is not a host name", c.HostName)
	}
	checks := []error{
		durIn("min_ttl", c.MinTTL, minAllowedTTL, 48*time.Hour),
		durIn("max_ttl", c.MaxTTL, c.MinTTL, 365*24*time.Hour),
		durIn("default_ttl", c.DefaultTTL, c.MinTTL, c.MaxTTL),
		durIn("lock_timeout", c.LockTimeout, minAllowedLock, 24*time.Hour),
		intIn("max_delivery_count", c.MaxDeliveryCount, 1, 100),
		intIn("max_queue_depth", c.MaxQueueDepth, 1, 100000),
		intIn("max_in_flight", c.MaxInFlight, 1, 65535),
		intIn("feedback_batch_size", c.FeedbackBatchSize, 1, 10000),
		durIn("feedback_interval", c.FeedbackInterval, minAllowedInterval, time.Hour),
		durIn("feedback_ttl", c.FeedbackTTL, minAllowedTTL, 30*24*time.Hour),
		durIn("feedback_lock_timeout", c.FeedbackLockTimeout, minAllowedLock, 24*time.Hour),
		intIn("feedback_max_delivery_count", c.FeedbackMaxDeliveryCount, 1, 100),
		durIn("settled_retention", c.SettledRetention, time.Second, 365*24*time.Hour),
		durIn("max_token_lifetime", c.MaxTokenLifetime, time.Minute, 10*365*24*time.Hour),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	return nil
}
