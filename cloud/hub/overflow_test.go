package hub

import (
	"errors"
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

// Properties travel percent-encoded in the delivery topic, which MQTT caps at 65,535 bytes: a
// message well under the 64 KB size limit whose topic would be longer is refused at the send,
// saying what to do, instead of being queued for a delivery that could never be published. One
// whose topic stays under the cap (60,000 bytes of it) is accepted and delivered whole.
func TestSendWhoseDeliveryTopicWouldExceedMQTTsLimitIsRefused(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	big := strings.Repeat("%", 30000) // 30,000 bytes of message, 90,000 of topic ("%25" each)
	_, err := h.Send(ctxT(t), "dev1", iothub.SendRequest{MessageID: "big", Properties: []iothub.AppProperty{{Name: "p", Value: big}}})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "delivery topic would be") ||
		!strings.Contains(err.Error(), "put the data in the body") {
		t.Fatalf("Send = %v; want the delivery topic refused", err)
	}
	if q, _ := h.Queue(ctxT(t), "dev1"); len(q) != 0 {
		t.Fatalf("queue after the refusal: %+v", q)
	}
	fits := strings.Repeat("%", 20000)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "fits", Properties: []iothub.AppProperty{{Name: "p", Value: fits}}})
	c := newConn("dev1")
	h.Attach(c)
	if m := c.next(t); m.MessageID != "fits" || len(m.Properties) != 1 || m.Properties[0].Value != fits {
		t.Fatalf("delivered %q with %d properties; want \"fits\" with its 20,000-byte property", m.MessageID, len(m.Properties))
	}
}
