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

// Within a hundred years either way the refusal gives the distance as a duration; a hundred years
// to the millisecond is still a duration (876000h), and only beyond it the words.
func TestSendExpiryRefusalSaysHowFarAway(t *testing.T) {
	h, clk := clockHub(t, testConfig())
	mustDevice(t, h, "dev1")
	century := 100 * 365 * 24 * time.Hour
	for _, c := range []struct {
		away time.Duration
		want string
	}{
		{50 * 365 * 24 * time.Hour, "438000h0m0s from now"},
		{-50 * 365 * 24 * time.Hour, "-438000h0m0s from now"},
		{century, "876000h0m0s from now"},
		{-century, "-876000h0m0s from now"},
		{century + time.Millisecond, "more than 100 years from now"},
		{-century - time.Millisecond, "more than 100 years from now"},
	} {
		exp := clk.Now().Add(c.away)
		_, err := h.Send(ctxT(t), "dev1", iothub.SendRequest{ExpiryTimeUTC: &exp})
		if err == nil || !strings.Contains(err.Error(), " is "+c.want+"; it must be between") {
			t.Errorf("expiry %v away: %v; want %q", c.away, err, c.want)
		}
	}
}
