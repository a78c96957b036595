package hub

import (
	"context"
	"database/sql"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Device keys are 16 to 64 bytes, as Azure accepts: both ends taken, one byte past either refused
// naming the key.
func TestDeviceKeyLengthBounds(t *testing.T) {
	h := newTestHub(t, testConfig())
	for _, tc := range []struct {
		n  int
		ok bool
	}{{15, false}, {16, true}, {64, true}, {65, false}} {
		key := base64.StdEncoding.EncodeToString(make([]byte, tc.n))
		for _, field := range []string{"primaryKey", "secondaryKey"} {
			d := iothub.Device{DeviceID: "dev1"}
			if field == "primaryKey" {
				d.Authentication.SymmetricKey.PrimaryKey = key
			} else {
				d.Authentication.SymmetricKey.SecondaryKey = key
			}
			_, _, err := h.PutDevice(context.Background(), d, "*")
			if tc.ok && err != nil {
				t.Errorf("%s of %d bytes: %v, want accepted", field, tc.n, err)
			}
			if !tc.ok {
				wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
				if !strings.Contains(err.Error(), field) {
					t.Errorf("%s of %d bytes: %v, want the field named", field, tc.n, err)
				}
			}
		}
	}
}

// For a device that does not exist, If-Match "*" creates it (an unconditional put), and an etag
// cannot match: PreconditionFailed, nothing created.
func TestIfMatchOnAMissingDevice(t *testing.T) {
	h := newTestHub(t, testConfig())
	wantCode(t, func() error {
		_, _, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: "ghost"}, `"abc"`)
		return err
	}(), ErrPreconditionFailed, iothub.CodePreconditionFailed)
	if _, err := h.GetDevice(context.Background(), "ghost"); err == nil {
		t.Fatal("a put with an etag that could not match created the device")
	}
	if _, created, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: "dev1"}, "*"); err != nil || !created {
		t.Fatalf("put with If-Match * on a missing device: created %v, %v; want created", created, err)
	}
}

// The registry's counts: each device's pending messages in the list, and the hub's enabled and
// total devices in its status.
func TestRegistryCounts(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	d2 := mustDevice(t, h, "dev2")
	mustDevice(t, h, "dev3")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2"})
	d2.Status = iothub.DeviceDisabled
	if _, _, err := h.PutDevice(context.Background(), d2, "*"); err != nil {
		t.Fatal(err)
	}
	ds, err := h.ListDevices(context.Background())
	if err != nil || len(ds) != 3 || ds[0].CloudToDeviceMessageCount != 2 || ds[1].CloudToDeviceMessageCount != 0 {
		t.Fatalf("ListDevices: %+v, %v; want dev1 with 2 pending", ds, err)
	}
	st, err := h.Status(context.Background())
	if err != nil || st.TotalDeviceCount != 3 || st.EnabledDeviceCount != 2 || st.QueuedMessageCount != 2 {
		t.Fatalf("Status: %+v, %v; want 3 devices, 2 enabled, 2 queued", st, err)
	}
}

// A store that lacks some built-in policies (written by a release that had fewer) gets each
// missing one at Open, whatever its place in the list; the policies it has keep their keys.
func TestOpenCreatesEveryMissingBuiltInPolicy(t *testing.T) {
	dir := t.TempDir()
	h := openHub(t, dir, testConfig())
	owner, _ := h.Policy("iothubowner")
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM policies WHERE name IN ('service', 'registryReadWrite')`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	h = openHub(t, dir, testConfig())
	for _, name := range []string{"service", "registryReadWrite"} {
		if p, ok := h.Policy(name); !ok || p.PrimaryKey == "" || len(p.Rights) == 0 {
			t.Errorf("policy %s after reopen: %+v, %v; want it recreated", name, p, ok)
		}
	}
	if p, _ := h.Policy("iothubowner"); p.PrimaryKey != owner.PrimaryKey {
		t.Errorf("iothubowner's key changed at reopen")
	}
}
