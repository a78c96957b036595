package iothub

import "testing"

// An empty segment anywhere (";;" left by a hand edit or a script joining parts) is skipped, and
// the keys after it still count: the parse must not stop at the first empty segment.
func TestConnectionStringEmptySegmentInTheMiddleIsSkipped(t *testing.T) {
	c, err := ParseDeviceConnectionString("HostName=h;;DeviceId=d;;SharedAccessKey=" + keyA)
	if err != nil {
		t.Fatalf("parse with empty middle segments: %v", err)
	}
	if c.HostName != "h" || c.DeviceID != "d" || c.SharedAccessKey != keyA {
		t.Fatalf("parsed %+v, want every key after the empty segments", c)
	}
}
