package hub

import (
	"context"
	"encoding/base64"
	"errors"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func TestRegistryKeysETagAndIfMatch(t *testing.T) {
	h := newTestHub(t, testConfig())
	ctx := context.Background()
	d := mustDevice(t, h, "dev1")
	for _, k := range []string{d.Authentication.SymmetricKey.PrimaryKey, d.Authentication.SymmetricKey.SecondaryKey} {
		if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 {
			t.Fatalf("generated key %q: %d bytes, %v", k, len(b), err)
		}
	}
	if d.GenerationID == "" || d.ETag == "" || d.Status != iothub.DeviceEnabled || d.ConnectionState != "Disconnected" {
		t.Fatalf("created device %+v", d)
	}
	_, _, err := h.PutDevice(ctx, iothub.Device{DeviceID: "dev1", Status: iothub.DeviceDisabled}, `"stale"`)
	wantCode(t, err, ErrPreconditionFailed, iothub.CodePreconditionFailed)
	// A create (no If-Match) of an existing device must not reset it or replace its keys.
	_, _, err = h.PutDevice(ctx, iothub.Device{DeviceID: "dev1", Authentication: iothub.Authentication{
		SymmetricKey: iothub.SymmetricKey{PrimaryKey: "AAAAAAAAAAAAAAAAAAAAAA=="}}}, "")
	wantCode(t, err, ErrDeviceExists, iothub.CodeDeviceAlreadyExists)
	if again, _ := h.GetDevice(ctx, "dev1"); again.Authentication != d.Authentication || again.ETag != d.ETag {
		t.Fatalf("refused create changed the device: %+v", again)
	}

	u, created, err := h.PutDevice(ctx, iothub.Device{DeviceID: "dev1", StatusReason: "maintenance"}, `"`+d.ETag+`"`)
	if err != nil || created {
		t.Fatalf("update: created %v, %v", created, err)
	}
	if u.ETag == d.ETag || u.GenerationID != d.GenerationID || u.Authentication != d.Authentication || u.StatusReason != "maintenance" {
		t.Fatalf("updated %+v\nfrom %+v", u, d)
	}
	if err := h.DeleteDevice(ctx, "dev1", d.ETag); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("delete with old etag: %v", err)
	}
	got, err := h.GetDevice(ctx, "dev1")
	if err != nil || got.ETag != u.ETag {
		t.Fatalf("GetDevice = %+v, %v", got, err)
	}

	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	d2, _, err := h.PutDevice(ctx, iothub.Device{DeviceID: "dev0", Authentication: iothub.Authentication{
		Type: "sas", SymmetricKey: iothub.SymmetricKey{PrimaryKey: key}}}, "")
	if err != nil || d2.Authentication.SymmetricKey.PrimaryKey != key || d2.Authentication.SymmetricKey.SecondaryKey == "" {
		t.Fatalf("given key: %+v, %v", d2, err)
	}
	_, _, err = h.PutDevice(ctx, iothub.Device{DeviceID: "dev3", Authentication: iothub.Authentication{
		SymmetricKey: iothub.SymmetricKey{PrimaryKey: "not base64!"}}}, "")
	wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
	_, _, err = h.PutDevice(ctx, iothub.Device{DeviceID: "dev3", Status: "paused"}, "")
	wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)

	list, err := h.ListDevices(ctx)
	if err != nil || len(list) != 2 || list[0].DeviceID != "dev0" || list[1].DeviceID != "dev1" {
		t.Fatalf("ListDevices = %+v, %v", list, err)
	}
	if err := h.DeleteDevice(ctx, "dev1", u.ETag); err != nil {
		t.Fatal(err)
	}
	_, err = h.GetDevice(ctx, "dev1")
	wantCode(t, err, ErrDeviceNotFound, iothub.CodeDeviceNotFound)
	wantCode(t, h.DeleteDevice(ctx, "dev1", ""), ErrDeviceNotFound, iothub.CodeDeviceNotFound)
}

func TestDisableAndDeleteCallOnDeviceGone(t *testing.T) {
	parallel(t)
	cfg := testConfig()
	h := newTestHub(t, cfg)
	ctx := context.Background()
	gone := make(chan string, 4)
	h.OnDeviceGone(func(id string) { gone <- id })
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	c := newConn("dev1")
	h.Attach(c)
	m := c.next(t)
	if _, _, err := h.PutDevice(ctx, iothub.Device{DeviceID: "dev1", Status: iothub.DeviceDisabled}, "*"); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-gone:
		if id != "dev1" {
			t.Fatalf("gone %q", id)
		}
	case <-time.After(waitLimit):
		t.Fatal("OnDeviceGone not called on disable")
	}
	// The hub stopped delivering to that connection: its message went back to the queue.
	q, _ := h.Queue(ctx, "dev1")
	if len(q) != 1 || q[0].State != iothub.StateEnqueued {
		t.Fatalf("queue after disable: %+v", q)
	}
	wantCode(t, h.Settle(ctx, "dev1", m.LockToken, iothub.DispositionComplete, ""), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2"})
	c.none(t, 100*time.Millisecond)

	// Deleting removes the queue and its pending feedback.
	mustDevice(t, h, "dev2")
	mustSend(t, h, "dev2", iothub.SendRequest{MessageID: "x", Ack: iothub.AckFull})
	if _, err := h.Purge(ctx, "dev1"); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteDevice(ctx, "dev1", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-gone:
		if id != "dev1" {
			t.Fatalf("gone %q", id)
		}
	case <-time.After(waitLimit):
		t.Fatal("OnDeviceGone not called on delete")
	}
	if _, err := h.Purge(ctx, "dev2"); err != nil {
		t.Fatal(err)
	}
	recs := receiveRecords(t, h, 1)
	if recs[0].DeviceID != "dev2" {
		t.Fatalf("feedback of the deleted device survived: %+v", recs)
	}
	noFeedback(t, h, 200*time.Millisecond)
	st, _ := h.Status(ctx)
	if st.TotalDeviceCount != 1 || st.QueuedMessageCount != 0 || st.PendingFeedbackCount != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestBuiltInPoliciesPersist(t *testing.T) {
	dir := t.TempDir()
	h := openHub(t, dir, testConfig())
	want := map[string][]Permission{
		"iothubowner":       {RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect},
		"service":           {ServiceConnect},
		"device":            {DeviceConnect},
		"registryRead":      {RegistryRead},
		"registryReadWrite": {RegistryRead, RegistryWrite},
	}
	ps := h.Policies()
	if len(ps) != len(want) {
		t.Fatalf("policies %+v", ps)
	}
	for _, p := range ps {
		if len(p.Rights) != len(want[p.Name]) {
			t.Fatalf("policy %s rights %v, want %v", p.Name, p.Rights, want[p.Name])
		}
		for _, r := range want[p.Name] {
			if !p.Has(r) {
				t.Fatalf("policy %s lacks %s", p.Name, r)
			}
		}
	}
	owner, _ := h.Policy("iothubowner")
	read, err := ReadPolicies(context.Background(), dir) // while the hub runs
	if err != nil || len(read) != 5 || read[0].Name != "device" {
		t.Fatalf("ReadPolicies = %+v, %v", read, err)
	}
	for _, p := range read {
		if p.Name == "iothubowner" && (p.PrimaryKey != owner.PrimaryKey || !p.Has(DeviceConnect)) {
			t.Fatalf("ReadPolicies iothubowner = %+v", p)
		}
	}
	if _, err := ReadPolicies(context.Background(), t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadPolicies of an empty dir: %v", err)
	}
	h.Close()
	h2 := openHub(t, dir, testConfig())
	again, ok := h2.Policy("iothubowner")
	if !ok || again.PrimaryKey != owner.PrimaryKey || again.SecondaryKey != owner.SecondaryKey {
		t.Fatalf("policy keys changed across restart")
	}
	if _, ok := h2.Policy("nope"); ok {
		t.Fatal("unknown policy found")
	}
}

func TestAuthenticate(t *testing.T) {
	cfg := testConfig()
	h := newTestHub(t, cfg)
	ctx := context.Background()
	d := mustDevice(t, h, "dev1")
	mustDevice(t, h, "dev2")
	if _, _, err := h.PutDevice(ctx, iothub.Device{DeviceID: "off", Status: iothub.DeviceDisabled, StatusReason: "stolen"}, ""); err != nil {
		t.Fatal(err)
	}
	off, _ := h.GetDevice(ctx, "off")
	devPol, _ := h.Policy("device")
	svcPol, _ := h.Policy("service")
	exp := time.Now().Add(time.Hour)
	tok := func(id, key, skn string, exp time.Time) string {
		t.Helper()
		sr := "hub.test/devices/" + id
		if skn != "" {
			sr = "hub.test"
		}
		s, err := iothub.NewSASToken(sr, key, skn, exp)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	user := func(host, id string, extra url.Values) string { return iothub.FormatUsername(host, id, "", extra) }
	keys := d.Authentication.SymmetricKey
	other := base64.StdEncoding.EncodeToString(make([]byte, 32))
	ext := url.Values{iothub.ExtensionParam: {iothub.ExtensionDispositions}}

	cases := []struct {
		name           string
		req            AuthRequest
		want           error // nil = accepted
		wantExt        bool
		detailContains string
	}{
		{"primary key", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", keys.PrimaryKey, "", exp)}, nil, false, ""},
		{"secondary key, extension, host case", AuthRequest{"dev1", user("HUB.test", "dev1", ext), tok("dev1", keys.SecondaryKey, "", exp)}, nil, true, ""},
		{"device policy", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", devPol.PrimaryKey, "device", exp)}, nil, false, ""},
		{"device policy secondary", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", devPol.SecondaryKey, "device", exp)}, nil, false, ""},
		{"service policy lacks DeviceConnect", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", svcPol.PrimaryKey, "service", exp)}, ErrUnauthorized, false, "DeviceConnect"},
		{"unknown policy", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", devPol.PrimaryKey, "nope", exp)}, ErrUnauthorized, false, "nope"},
		{"expired", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", keys.PrimaryKey, "", time.Now().Add(-time.Minute))}, iothub.ErrTokenExpired, false, ""},
		{"expired secondary", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", keys.SecondaryKey, "", time.Now().Add(-time.Minute))}, iothub.ErrTokenExpired, false, ""},
		{"wrong key", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev1", other, "", exp)}, iothub.ErrTokenSignature, false, ""},
		{"other device's token", AuthRequest{"dev1", user("hub.test", "dev1", nil), tok("dev2", keys.PrimaryKey, "", exp)}, iothub.ErrTokenResource, false, ""},
		{"wrong host", AuthRequest{"dev1", user("other.example", "dev1", nil), tok("dev1", keys.PrimaryKey, "", exp)}, ErrUnauthorized, false, `expected "hub.test"`},
		{"client id differs", AuthRequest{"dev2", user("hub.test", "dev1", nil), tok("dev1", keys.PrimaryKey, "", exp)}, ErrUnauthorized, false, "dev2"},
		{"disabled", AuthRequest{"off", user("hub.test", "off", nil), tok("off", off.Authentication.SymmetricKey.PrimaryKey, "", exp)}, ErrDeviceDisabled, false, "stolen"},
		{"unknown device", AuthRequest{"ghost", user("hub.test", "ghost", nil), tok("ghost", devPol.PrimaryKey, "device", exp)}, ErrDeviceNotFound, false, ""},
		{"no password", AuthRequest{"dev1", user("hub.test", "dev1", nil), ""}, ErrUnauthorized, false, ""},
		{"garbage password", AuthRequest{"dev1", user("hub.test", "dev1", nil), "hunter2"}, iothub.ErrTokenMalformed, false, ""},
		{"garbage username", AuthRequest{"dev1", "nonsense", tok("dev1", keys.PrimaryKey, "", exp)}, ErrUnauthorized, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.Authenticate(ctx, tc.req)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if res.DeviceID != tc.req.ClientID || res.Extension != tc.wantExt || res.TokenExpiry.Unix() != exp.Unix() {
					t.Fatalf("result %+v", res)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", res)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v: want %v", err, tc.want)
			}
			if tc.want != ErrDeviceDisabled && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), tc.detailContains) {
				t.Fatalf("error %q does not mention %q", err, tc.detailContains)
			}
		})
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	if err := (Config{}).Defaults().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	d := Config{}.Defaults()
	if d.LockTimeout != time.Minute || d.MaxDeliveryCount != 10 || d.MaxQueueDepth != 50 || d.DefaultTTL != time.Hour ||
		d.MinTTL != time.Minute || d.MaxTTL != 48*time.Hour || d.FeedbackBatchSize != 64 || d.FeedbackInterval != time.Second {
		t.Fatalf("defaults %+v", d)
	}
	cases := map[string]func(*Config){
		"hostname":                    func(c *Config) { c.HostName = "a/b" },
		"default_ttl":                 func(c *Config) { c.DefaultTTL = 72 * time.Hour },
		"min_ttl":                     func(c *Config) { c.MinTTL = 500 * time.Millisecond },
		"max_ttl":                     func(c *Config) { c.MaxTTL = 30 * time.Second },
		"lock_timeout":                func(c *Config) { c.LockTimeout = 10 * time.Millisecond },
		"max_delivery_count":          func(c *Config) { c.MaxDeliveryCount = 101 },
		"max_queue_depth":             func(c *Config) { c.MaxQueueDepth = -1 },
		"max_in_flight":               func(c *Config) { c.MaxInFlight = -3 },
		"feedback_batch_size":         func(c *Config) { c.FeedbackBatchSize = -1 },
		"feedback_interval":           func(c *Config) { c.FeedbackInterval = time.Millisecond },
		"feedback_ttl":                func(c *Config) { c.FeedbackTTL = -time.Second },
		"feedback_lock_timeout":       func(c *Config) { c.FeedbackLockTimeout = time.Millisecond },
		"feedback_max_delivery_count": func(c *Config) { c.FeedbackMaxDeliveryCount = 200 },
	}
	for key, mut := range cases {
		c := Config{}.Defaults()
		mut(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: Validate = %v", key, err)
		}
	}
	short := Config{MinTTL: time.Second, LockTimeout: 100 * time.Millisecond}.Defaults()
	if err := short.Validate(); err != nil {
		t.Fatalf("test-friendly minimums refused: %v", err)
	}
	if _, err := Open(context.Background(), t.TempDir(), Config{MaxDeliveryCount: 500}, Events{}); err == nil ||
		!strings.Contains(err.Error(), "max_delivery_count") {
		t.Fatalf("Open with a bad config: %v", err)
	}
}

// A fleet reconnecting at once after a restart: as many read transactions as the pool has
// connections, each running its first (not yet prepared) statement. Preparing on the pool from
// inside them once deadlocked the hub; the barrier makes the old failure certain.
func TestReadsOnAColdStatementCacheDoNotDeadlock(t *testing.T) {
	dir := t.TempDir()
	h := openHub(t, dir, testConfig())
	mustDevice(t, h, "dev1")
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openHub(t, dir, testConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 4 // the read pool's size
	var begun sync.WaitGroup
	begun.Add(n)
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- h.view(ctx, func(tx storeTx) error {
				begun.Done()
				begun.Wait() // every connection of the pool is now inside a transaction
				_, ok, err := tx.device("dev1")
				if err == nil && !ok {
					err = errors.New("dev1 not found")
				}
				return err
			})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("read on a cold statement cache: %v", err)
		}
	}
}
