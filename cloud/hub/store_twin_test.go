package hub

import (
	"errors"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A twin document survives a restart, belongs to one device generation (delete and create again:
// empty), and an unknown device is DeviceNotFound; fn's error aborts the update.
func TestTwinStorage(t *testing.T) {
	dir := t.TempDir()
	h := openHub(t, dir, testConfig())
	ctx := ctxT(t)
	mustDevice(t, h, "pi-1")
	if doc, dev, err := h.ReadTwin(ctx, "pi-1"); err != nil || doc != nil || dev.DeviceID != "pi-1" || dev.ConnectionState != "Disconnected" {
		t.Fatalf("fresh twin: %q %+v %v", doc, dev, err)
	}
	if _, err := h.UpdateTwin(ctx, "pi-1", func(old []byte, _ iothub.Device) ([]byte, error) { return []byte(`{"v":1}`), nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := h.UpdateTwin(ctx, "pi-1", func(old []byte, _ iothub.Device) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openHub(t, dir, testConfig())
	if doc, _, err := h.ReadTwin(ctx, "pi-1"); err != nil || string(doc) != `{"v":1}` {
		t.Fatalf("after restart: %q %v", doc, err)
	}
	if err := h.DeleteDevice(ctx, "pi-1", ""); err != nil {
		t.Fatal(err)
	}
	mustDevice(t, h, "pi-1")
	if doc, _, err := h.ReadTwin(ctx, "pi-1"); err != nil || doc != nil {
		t.Fatalf("recreated device inherits %q %v", doc, err)
	}
	if _, _, err := h.ReadTwin(ctx, "nobody"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatal(err)
	}
	if _, err := h.UpdateTwin(ctx, "nobody", func([]byte, iothub.Device) ([]byte, error) { return []byte("{}"), nil }); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatal(err)
	}
}
