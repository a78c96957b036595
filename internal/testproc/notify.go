package testproc

import (
	"net"
	"path/filepath"
	"testing"
)

// NotifySocket stands in for systemd: a unixgram socket to pass a child as NOTIFY_SOCKET, and the
// datagrams it sends (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1) in order. The channel holds 256;
// later datagrams are dropped rather than blocking. It closes when the test ends.
func NotifySocket(t testing.TB) (path string, msgs <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			select {
			case ch <- string(buf[:n]):
			default:
			}
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return path, ch
}
