package conn

import (
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Each connect failure gets the likely cause and the command that checks it; the hub's own reason
// cannot travel in a 3.1.1 CONNACK, so the agent reasons from its clock and the hub's certificate.
func TestHint(t *testing.T) {
	dev := iothub.DeviceConnectionString{HostName: "hub.local", DeviceID: "pump-7", SharedAccessKey: "eA=="}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	issued := now.Add(-24 * time.Hour)
	names := []string{"hub.local", "localhost"}
	for _, tc := range []struct {
		name  string
		err   error
		now   time.Time
		names []string
		want  string
	}{
		{"unknown CA", fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}), now, nil, "set connection.ca_file"},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, now, nil, "is c2d-hub running"},
		{"dns", &net.DNSError{Name: "hub.local", Err: "no such host"}, now, nil, "getent hosts hub.local"},
		{"disabled or unknown", packets.ErrorRefusedNotAuthorised, now, names, "c2d device show pump-7"},
		{"clock in 1970", packets.ErrorRefusedBadUsernameOrPassword, time.Unix(0, 0), names, "timedatectl"},
		{"clock before the certificate", packets.ErrorRefusedBadUsernameOrPassword, issued.Add(-time.Hour), names, "before the hub's certificate was issued"},
		{"hostname changed", packets.ErrorRefusedBadUsernameOrPassword, now, []string{"hub.example.net"}, "hostname: probably changed"},
		{"key renewed", packets.ErrorRefusedBadUsernameOrPassword, now, names, "c2d device connection-string pump-7"},
	} {
		got := Hint(tc.err, dev, "hub.local:8883", tc.now, tc.names, issued)
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: hint %q lacks %q", tc.name, got, tc.want)
		}
	}
	if got := Hint(fmt.Errorf("something else"), dev, "x", now, nil, issued); got != "" {
		t.Errorf("unknown error got a hint: %q", got)
	}
}
