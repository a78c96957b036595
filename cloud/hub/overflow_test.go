package hub

import (
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Issue #17: an expiry centuries away is refused saying so, not with a clamped "-2562047h" duration.
func TestSendFarExpirySaysSo(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	for _, exp := range []time.Time{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		_, err := h.Send(ctxT(t), "dev1", iothub.SendRequest{ExpiryTimeUTC: &exp})
		if err == nil || !strings.Contains(err.Error(), "more than 100 years from now") || strings.Contains(err.Error(), "2562047h") {
			t.Errorf("expiry %v: %v", exp, err)
		}
	}
}
