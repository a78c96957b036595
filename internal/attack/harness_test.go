package attack

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/bench"
	"github.com/c2d-project/c2d/internal/testproc"
)

var hubBin string

func TestMain(m *testing.M) {
	code, err := mainErr(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func mainErr(m *testing.M) (int, error) {
	if dir := os.Getenv("C2D_ATTACK_BIN"); dir != "" {
		hubBin = filepath.Join(dir, "c2d-hub")
		if _, err := os.Stat(hubBin); err != nil {
			return 0, fmt.Errorf("C2D_ATTACK_BIN: %w", err)
		}
		return m.Run(), nil
	}
	root, err := bench.ModuleRoot()
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "c2d-attack-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if err := testproc.Build(dir, nil, filepath.Join(root, "cloud", "cmd", "c2d-hub")); err != nil {
		return 0, err
	}
	hubBin = filepath.Join(dir, "c2d-hub")
	return m.Run(), nil
}

const hostName = "localhost"

// startHub starts c2d-hub with plain MQTT and HTTP on loopback and everything else off.
func startHub(t *testing.T, config string, extra ...string) *testproc.Hub {
	t.Helper()
	args := append([]string{"--hostname", hostName, "--mqtt", "127.0.0.1:0", "--mqtts", "off",
		"--http", "127.0.0.1:0", "--https", "off", "--log-level", "info"}, extra...)
	return testproc.StartHub(t, hubBin, testproc.HubOptions{Config: config, Args: args})
}

// device registers id and returns its connection string.
func device(t *testing.T, h *testproc.Hub, id string) iothub.DeviceConnectionString {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := h.Client.CreateDevice(ctx, id, "", "")
	if err != nil {
		t.Fatalf("create device %s: %v", id, err)
	}
	return iothub.DeviceConnectionString{HostName: hostName, DeviceID: id, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
}

// connectPacket is an MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s).
func connectPacket(clientID, username, password string) []byte {
	str := func(s string) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(len(s)))
		return append(b, s...)
	}
	body := append(str("MQTT"), 4, 0x02|0x80|0x40, 0, 60)
	body = append(body, str(clientID)...)
	body = append(body, str(username)...)
	body = append(body, str(password)...)
	return append(append([]byte{0x10}, remainingLength(len(body))...), body...)
}

func remainingLength(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// connack sends pkt on a new connection to addr and returns the CONNACK return code, or an error
// when none came within 5 s.
func connack(addr string, pkt []byte) (byte, net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		return 0, nil, err
	}
	var b [4]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return 0, nil, fmt.Errorf("no CONNACK: %w", err)
	}
	if b[0] != 0x20 || b[1] != 2 {
		c.Close()
		return 0, nil, fmt.Errorf("not a 3.1.1 CONNACK: % x", b)
	}
	_ = c.SetDeadline(time.Time{})
	return b[3], c, nil
}

// deviceConnect CONNECTs as cs with a fresh one-hour token and returns the CONNACK code.
func deviceConnect(t *testing.T, addr string, cs iothub.DeviceConnectionString) (byte, net.Conn, error) {
	t.Helper()
	tok, err := cs.Token(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return connack(addr, connectPacket(cs.DeviceID, iothub.FormatUsername(hostName, cs.DeviceID, "", nil), tok))
}

// httpConn is one HTTP/1.1 keep-alive connection, opened before an attack so that it can still
// ask when the hub has no descriptor left to accept a new one.
type httpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{c: c, r: bufio.NewReader(c)}
}

func (h *httpConn) get(t *testing.T, path string) (int, string) {
	t.Helper()
	_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, hostName); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond every 20 ms for up to 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling an outside process, with a deadline
	}
}

// metric returns the value of the Prometheus sample whose line starts with name (labels
// included), or -1.
func metric(body, name string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}
