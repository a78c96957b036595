//go:build linux

package attack

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// setNOFILE lowers a running process's RLIMIT_NOFILE (soft and hard), as `prlimit --nofile`
// does. It is set once the hub is up, so the test knows how many descriptors it holds.
func setNOFILE(t *testing.T, pid, n int) {
	t.Helper()
	lim := syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), uintptr(syscall.RLIMIT_NOFILE),
		uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		t.Fatalf("prlimit(%d, NOFILE, %d): %v", pid, n, e)
	}
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// Issue #17, High: one EMFILE from Accept stopped the MQTT listener for good — connections queued
// in the kernel were never served, nothing was logged and /healthz said 200. Here the hub runs
// out of descriptors under a lowered RLIMIT_NOFILE; while it is out, /healthz (asked on a
// connection opened before) says 503 naming the listener; once the flood is gone a device
// connects again, /healthz is back to 200 and /metrics counts the failed Accepts.
func TestFileDescriptorExhaustion(t *testing.T) {
	h := startHub(t, "")
	cs := device(t, h, "fd-dev")
	pid := h.Endpoints.PID
	health := dialHTTP(t, h.Endpoints.HTTP)
	if code, body := health.get(t, "/healthz"); code != 200 {
		t.Fatalf("/healthz before: %d %s", code, body)
	}
	setNOFILE(t, pid, openFDs(t, pid)+16)

	// A flood of silent connections: the kernel completes them all (backlog), the hub can accept
	// only 16.
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 64 {
		c, err := net.Dial("tcp", h.Endpoints.MQTT)
		if err != nil {
			t.Fatalf("flood connection %d: %v", len(flood), err)
		}
		flood = append(flood, c)
	}
	eventually(t, "the hub logs that it cannot accept", func() bool {
		return strings.Contains(h.Log.String(), "cannot accept connections")
	})
	code, body := health.get(t, "/healthz")
	if code != 503 || !strings.Contains(body, "mqtt listener mqtt") || !strings.Contains(body, "too many open files") {
		t.Errorf("/healthz while out of descriptors: %d %s, want 503 naming the mqtt listener and EMFILE", code, body)
	}

	for _, c := range flood {
		c.Close()
	}
	flood = nil
	var rc byte
	eventually(t, "a device connects once the flood is gone", func() bool {
		var c net.Conn
		var err error
		rc, c, err = deviceConnect(t, h.Endpoints.MQTT, cs)
		if err != nil {
			t.Logf("connect: %v", err)
			return false
		}
		c.Close()
		return true
	})
	if rc != 0 {
		t.Fatalf("CONNACK %#x after the flood, want 0 (accepted)", rc)
	}
	eventually(t, "/healthz is 200 again", func() bool { c, _ := health.get(t, "/healthz"); return c == 200 })
	_, m := health.get(t, "/metrics")
	if n := metric(m, `c2d_mqtt_accept_errors_total{listener="mqtt"}`); n < 1 {
		t.Errorf("c2d_mqtt_accept_errors_total{listener=\"mqtt\"} = %v, want ≥ 1", n)
	}
}
