package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A session's write queue holds exactly writeQueue (256) PUBLISHes waiting for its writer; the
// next delivery is refused (the core keeps the message and retries), never queued past the bound.
func TestWriteQueueBoundIsExact(t *testing.T) {
	// wrunning: no writer is started, so what was queued stays in c.wq to be counted.
	c := &conn{deviceID: "d", attached: true, qos0: true, wrunning: true, pending: map[uint16]pendingDelivery{}}
	for i := range writeQueue {
		if err := c.Deliver(&iothub.Message{MessageID: "m", LockToken: "lt"}); err != nil {
			t.Fatalf("delivery %d of %d: %v", i+1, writeQueue, err)
		}
	}
	if err := c.Deliver(&iothub.Message{MessageID: "m", LockToken: "lt"}); !errors.Is(err, errBacklog) {
		t.Fatalf("delivery %d: %v, want the write queue full", writeQueue+1, err)
	}
	if len(c.wq) != writeQueue {
		t.Fatalf("%d queued, want %d", len(c.wq), writeQueue)
	}
}

// feedConn is a connection whose peer's bytes are given by the test, one Read at a time.
type feedConn struct {
	net.Conn
	reads [][]byte
}

func (f *feedConn) Read(p []byte) (int, error) {
	if len(f.reads) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.reads[0])
	f.reads[0] = f.reads[0][n:]
	if len(f.reads[0]) == 0 {
		f.reads = f.reads[1:]
	}
	return n, nil
}

func (f *feedConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1} }
func (f *feedConn) Close() error         { return nil }

// remaining encodes MQTT's variable-length remaining length.
func remaining(n int) []byte {
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

func newPre(max int) (*preAuth, *[]string, *syncBuffer) {
	var reasons []string
	logs := &syncBuffer{}
	return &preAuth{max: max, log: slog.New(slog.NewTextHandler(logs, nil)), onRefuse: func(r string) { reasons = append(reasons, r) }}, &reasons, logs
}

// readAll reads through the gate until EOF or its error.
func readAll(g net.Conn) (int, error) {
	var n int
	p := make([]byte, 4096)
	for {
		k, err := g.Read(p)
		n += k
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

// A CONNECT declaring exactly MaxConnectSize bytes is read; one byte more ends the connection
// before mochi would allocate it, with the reason given to Events.Refused.
func TestConnectSizeLimitIsExact(t *testing.T) {
	for _, size := range []int{MaxConnectSize, MaxConnectSize + 1, 300000, 1 << 21} {
		p, reasons, _ := newPre(10)
		head := append([]byte{0x10}, remaining(size)...)
		if size == 1<<21 {
			// 2 MiB in MQTT's longest form, four length bytes, the first three adding nothing.
			head = []byte{0x10, 0x80, 0x80, 0x80, 0x01}
		}
		g, ok := p.admit(&feedConn{reads: [][]byte{head, make([]byte, min(size, 1<<17))}})
		if !ok {
			t.Fatal("admit refused the first connection")
		}
		_, err := readAll(g)
		if size <= MaxConnectSize {
			if err != nil || len(*reasons) != 0 {
				t.Errorf("CONNECT of %d bytes: %v, refused %v", size, err, *reasons)
			}
		} else if !errors.Is(err, errConnectTooLarge) || len(*reasons) != 1 || (*reasons)[0] != RefusedConnectTooLarge {
			t.Errorf("CONNECT of %d bytes: %v, refused %v; want it refused as too large", size, err, *reasons)
		}
		if n := p.pending.Load(); n != 0 {
			t.Errorf("CONNECT of %d bytes: %d still counted unauthenticated after it was read or refused", size, n)
		}
	}
}

// A connection counts as unauthenticated until the whole of its first packet has passed — for a
// one-byte and a multi-byte remaining length, a body split over reads, an empty body, and a first
// packet that is not a CONNECT (mochi refuses it) — and not a byte longer.
func TestConnectionCountsUnauthenticatedUntilItsFirstPacketPassed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reads [][]byte
		// pendingAfter[i]: still counted after read i
		pendingAfter []bool
	}{
		{"one-byte length, body in one read", [][]byte{{0x10, 3}, {1, 2, 3}}, []bool{true, false}},
		{"body split", [][]byte{{0x10, 3, 1, 2}, {3}}, []bool{true, false}},
		{"two-byte length", [][]byte{append([]byte{0x10}, remaining(200)...), make([]byte, 199), {0}}, []bool{true, true, false}},
		{"three-byte length", [][]byte{append([]byte{0x10}, remaining(16384)...), make([]byte, 16383), {0}}, []bool{true, true, false}},
		{"length split from type", [][]byte{{0x10}, {0x81}, {0x01}, make([]byte, 129)}, []bool{true, true, true, false}},
		{"empty body", [][]byte{{0x10, 0}}, []bool{false}},
		{"not a CONNECT", [][]byte{{0x82, 5}}, []bool{false}},
	} {
		p, _, _ := newPre(10)
		fc := &feedConn{reads: tc.reads}
		g, _ := p.admit(fc)
		buf := make([]byte, 1<<15)
		for i, want := range tc.pendingAfter {
			if _, err := g.Read(buf); err != nil {
				t.Fatalf("%s: read %d: %v", tc.name, i, err)
			}
			if got := p.pending.Load() == 1; got != want {
				t.Errorf("%s: after read %d counted unauthenticated %v, want %v", tc.name, i, got, want)
			}
		}
		_ = g.Close()
		if n := p.pending.Load(); n != 0 {
			t.Errorf("%s: %d counted after Close", tc.name, n)
		}
	}
}

// MaxUnauthenticated connections may wait for their CONNECT at once, not one more; a slot frees
// when one of them closes. Refusals are logged once per 10 s with the count since the last line.
func TestUnauthenticatedLimitIsExact(t *testing.T) {
	p, reasons, logs := newPre(2)
	a, okA := p.admit(&feedConn{})
	_, okB := p.admit(&feedConn{})
	if !okA || !okB {
		t.Fatal("the first two connections were refused")
	}
	for range 3 {
		if _, ok := p.admit(&feedConn{}); ok {
			t.Fatal("a third connection admitted over the limit of 2")
		}
	}
	if len(*reasons) != 3 || (*reasons)[0] != RefusedUnauthenticatedLimit {
		t.Fatalf("refusals reported: %v", *reasons)
	}
	if n := strings.Count(logs.String(), "too many connections without CONNECT"); n != 1 {
		t.Fatalf("%d log lines for 3 refusals within 10 s, want 1:\n%s", n, logs)
	}
	p.mu.Lock()
	p.loggedAt = time.Now().Add(-10 * time.Second) // the next refusal is 10 s after the line
	p.mu.Unlock()
	_ = a.Close()
	if _, ok := p.admit(&feedConn{}); !ok {
		t.Fatal("no slot after one of the waiting connections closed")
	}
	if _, ok := p.admit(&feedConn{}); ok {
		t.Fatal("admitted over the limit again")
	}
	if s := logs.String(); strings.Count(s, "too many connections without CONNECT") != 2 || !strings.Contains(s, "refused=3") {
		t.Fatalf("want a second line 10 s on, counting the 2 suppressed refusals and this one:\n%s", s)
	}
}
