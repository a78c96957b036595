package server_test

import (
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Pins for cloud/twin's service side found by its mutants (docs/testing.md, "cloud/twin and
// cloud/methods").

// TestTwinShowsTheDevicesStatus: a disabled device's twin says disabled (the registry's status,
// not a default).
func TestTwinShowsTheDevicesStatus(t *testing.T) {
	h := newITHub(t, nil)
	h.device("off-1")
	if _, err := h.owner.SetDeviceStatus(h.ctx(), "off-1", iothub.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	if tw, _ := h.twin(t, "off-1"); tw.Status != "disabled" {
		t.Fatalf("twin of a disabled device: status %q", tw.Status)
	}
}

// TestTwinPatchWithNullSections: a service PATCH whose tags, properties or desired are null
// changes nothing and is not an error (an SDK serialising an empty field as null).
func TestTwinPatchWithNullSections(t *testing.T) {
	h := newITHub(t, nil)
	h.device("pi-n")
	if r := h.do("PATCH", "/twins/pi-n", "iothubowner", `{"tags":{"site":"a"},"properties":{"desired":{"rate":5}}}`); r.code != 200 {
		t.Fatalf("PATCH: %d %s", r.code, r.body)
	}
	before, _ := h.twin(t, "pi-n")
	for _, body := range []string{`{"tags":null}`, `{"properties":null}`, `{"properties":{"desired":null}}`} {
		if r := h.do("PATCH", "/twins/pi-n", "iothubowner", body); r.code != 200 {
			t.Errorf("PATCH %s: %d %s", body, r.code, r.body)
		}
	}
	after, _ := h.twin(t, "pi-n")
	if first, _ := h.twin(t, "pi-n"); first.Version < 2 {
		t.Errorf("twin version %d after a PATCH of a new twin; want it to have gone up from 1", first.Version)
	}
	if after.Tags["site"] != "a" || after.Properties.Desired["rate"] != float64(5) ||
		after.Properties.Desired["$version"] != before.Properties.Desired["$version"] {
		t.Fatalf("null sections changed the twin: before %+v, after %+v", before, after)
	}
}
