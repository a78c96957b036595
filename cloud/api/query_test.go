package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Registry.createQuery("SELECT * FROM devices", n) pages with x-ms-max-item-count and
// x-ms-continuation; GET /devices/ (Registry.list) answers like GET /devices.
func TestDeviceQueryPagesAndTrailingSlashList(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"c", "a", "b"} {
		if _, _, err := e.hub.PutDevice(context.Background(), iothub.Device{DeviceID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	tok := e.token("registryRead", time.Hour)
	var ids []string
	cont := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 1 for 3 devices: %v", ids)
		}
		hdr := map[string]string{"x-ms-max-item-count": "1"}
		if cont != "" {
			hdr["x-ms-continuation"] = cont
		}
		a := e.do(http.MethodPost, "/devices/query?api-version="+iothub.APIVersion, tok, map[string]string{"query": "SELECT * FROM devices"}, hdr)
		if a.code != http.StatusOK {
			t.Fatalf("query: %d %s", a.code, a.body)
		}
		var twins []map[string]any
		if err := json.Unmarshal(a.body, &twins); err != nil || len(twins) != 1 {
			t.Fatalf("page %s: %v", a.body, err)
		}
		if twins[0]["status"] != "enabled" || twins[0]["properties"] == nil {
			t.Fatalf("twin %v", twins[0])
		}
		ids = append(ids, twins[0]["deviceId"].(string))
		if cont = a.header.Get("x-ms-continuation"); cont == "" {
			break
		}
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("query pages gave %v, want a b c once each", ids)
	}
	if a := e.do(http.MethodPost, "/devices/query", tok, map[string]string{"query": "SELECT * FROM devices WHERE status = 'enabled'"}, nil); a.code != http.StatusBadRequest {
		t.Fatalf("unsupported query: %d %s, want 400", a.code, a.body)
	}
	a := e.do(http.MethodGet, "/devices/?api-version="+iothub.APIVersion, tok, nil, nil)
	var devs []iothub.Device
	if a.code != http.StatusOK || json.Unmarshal(a.body, &devs) != nil || len(devs) != 3 {
		t.Fatalf("GET /devices/: %d %s", a.code, a.body)
	}
}
