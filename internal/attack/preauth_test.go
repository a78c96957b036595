package attack

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// closedWithin reports whether the hub closes c (EOF or reset) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	for {
		n, err := c.Read(b[:])
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false
		}
		if err != nil {
			return true
		}
		_ = n // a packet (a DISCONNECT, say): keep reading until the close
	}
}

// Issue #17, Medium: mochi allocated a CONNECT's declared length before authentication (3,000
// connections × 327,000-byte CONNECTs took the hub to 1.16 GB). A CONNECT declared beyond 16 KB
// is now closed on its fixed header, before the hub reads (or allocates) its body.
func TestOversizedConnectClosedBeforeItsBody(t *testing.T) {
	h := startHub(t, "")
	c, err := net.Dial("tcp", h.Endpoints.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// CONNECT, remaining length 326,999, and only the first bytes of its body.
	if _, err := c.Write(append([]byte{0x10}, remainingLength(326999)...)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60}); err != nil && !isReset(err) {
		t.Fatal(err)
	}
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("a 327,000-byte CONNECT is still being read 5 s later; want the connection closed on its header")
	}
	_, m := dialHTTP(t, h.Endpoints.HTTP).get(t, "/metrics")
	if n := metric(m, `c2d_mqtt_refused_total{reason="connect_too_large"}`); n != 1 {
		t.Errorf(`c2d_mqtt_refused_total{reason="connect_too_large"} = %v, want 1`, n)
	}
	// A real CONNECT is far below the bound.
	cs := device(t, h, "big-dev")
	if rc, c, err := deviceConnect(t, h.Endpoints.MQTT, cs); err != nil || rc != 0 {
		t.Fatalf("device CONNECT: %#x %v", rc, err)
	} else {
		c.Close()
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

// Issue #17, Medium: connections that never finish CONNECT are capped (auth.max_unauthenticated);
// past the cap new ones are closed at once and the hub says so; the ones holding the cap still go
// at the pre-CONNECT timeout, and once they are gone a device connects.
func TestUnauthenticatedConnectionsCapped(t *testing.T) {
	h := startHub(t, "auth:\n  max_unauthenticated: 8\n")
	cs := device(t, h, "cap-dev")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 8 {
		c, err := net.Dial("tcp", h.Endpoints.MQTT)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	health := dialHTTP(t, h.Endpoints.HTTP)
	eventually(t, "8 unauthenticated connections counted", func() bool {
		_, m := health.get(t, "/metrics")
		return metric(m, "c2d_mqtt_unauthenticated_connections") == 8
	})
	// Half a CONNECT counts as unauthenticated too.
	c9, err := net.Dial("tcp", h.Endpoints.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	defer c9.Close()
	if !closedWithin(c9, 5*time.Second) {
		t.Fatal("the 9th unauthenticated connection is still open; want it closed at once")
	}
	eventually(t, "the hub logs the cap", func() bool {
		return strings.Contains(h.Log.String(), "too many connections without CONNECT")
	})
	if rc, _, err := deviceConnect(t, h.Endpoints.MQTT, cs); err == nil {
		t.Fatalf("a device got CONNACK %#x while the cap was full; want the connection closed", rc)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	eventually(t, "the cap frees up", func() bool {
		_, m := health.get(t, "/metrics")
		return metric(m, "c2d_mqtt_unauthenticated_connections") == 0
	})
	rc, c, err := deviceConnect(t, h.Endpoints.MQTT, cs)
	if err != nil || rc != 0 {
		t.Fatalf("device CONNECT after the flood: %#x %v", rc, err)
	}
	c.Close()
	_, m := health.get(t, "/metrics")
	if n := metric(m, `c2d_mqtt_refused_total{reason="unauthenticated_limit"}`); n < 2 {
		t.Errorf(`c2d_mqtt_refused_total{reason="unauthenticated_limit"} = %v, want ≥ 2`, n)
	}
}

// Issue #17, Medium: a token with se=2^62 was accepted, so its session never expired. A token
// beyond auth.max_token_lifetime is refused with "bad username or password" and the reason logged.
func TestFarFutureTokenRefused(t *testing.T) {
	h := startHub(t, "") // auth.max_token_lifetime: its default, 8760h
	cs := device(t, h, "se-dev")
	user := iothub.FormatUsername(hostName, cs.DeviceID, "", nil)
	for _, exp := range []time.Time{time.Unix(1<<62, 0), time.Now().Add(2 * 8760 * time.Hour)} {
		tok, err := iothub.NewSASToken(iothub.DeviceResource(hostName, cs.DeviceID, ""), cs.SharedAccessKey, "", exp)
		if err != nil {
			t.Fatal(err)
		}
		rc, c, err := connack(h.Endpoints.MQTT, connectPacket(cs.DeviceID, user, tok))
		if err != nil {
			t.Fatalf("se=%d: %v", exp.Unix(), err)
		}
		c.Close()
		if rc != 0x04 {
			t.Errorf("token expiring %v: CONNACK %#x, want 0x04", exp, rc)
		}
	}
	eventually(t, "a log line naming auth.max_token_lifetime", func() bool {
		return strings.Contains(h.Log.String(), "auth.max_token_lifetime")
	})
	tok, _ := iothub.NewSASToken(iothub.DeviceResource(hostName, cs.DeviceID, ""), cs.SharedAccessKey, "", time.Now().Add(8000*time.Hour))
	if rc, c, err := connack(h.Endpoints.MQTT, connectPacket(cs.DeviceID, user, tok)); err != nil || rc != 0 {
		t.Fatalf("a 8000 h token: %#x %v", rc, err)
	} else {
		c.Close()
	}
}
