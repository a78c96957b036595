package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/listeners"
)

// mochi names a listener's protocol in its logs: TLS listeners are the secure ones.
func TestListenerProtocolNames(t *testing.T) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	for _, tc := range []struct {
		l    listeners.Listener
		want string
	}{
		{newTCPListener("a", "", nil, time.Second), "mqtt"},
		{newTCPListener("b", "", conf, time.Second), "mqtts"},
		{newWSListener("c", "", nil, time.Second), "ws"},
		{newWSListener("d", "", conf, time.Second), "wss"},
	} {
		if got := tc.l.Protocol(); got != tc.want {
			t.Errorf("%s: protocol %q, want %q", tc.l.ID(), got, tc.want)
		}
	}
}

// served is a listener serving in the background, logging at debug level.
type served struct {
	logs *syncBuffer
	done chan struct{} // closed when Serve returns
}

// serve binds l, lets wrap replace the bound socket (nil: keep it), and serves with establish.
func serve(t *testing.T, l listeners.Listener, s *socket, wrap func(net.Listener) net.Listener, establish listeners.EstablishFn) served {
	t.Helper()
	sv := served{logs: &syncBuffer{}, done: make(chan struct{})}
	if err := l.Init(slog.New(slog.NewTextHandler(sv.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))); err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		s.ln = wrap(s.ln)
	}
	go func() {
		defer close(sv.done)
		l.Serve(establish)
	}()
	return sv
}

func (sv served) stopped(t *testing.T) {
	t.Helper()
	select {
	case <-sv.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running 10 s after Close")
	}
}

// echoOne answers one byte with the same byte and ends cleanly (nil).
func echoOne(_ string, c net.Conn) error {
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	_, err := c.Write(b)
	return err
}

// timedListener records when each Accept was called.
type timedListener struct {
	net.Listener
	mu    sync.Mutex
	calls []time.Time
}

func (l *timedListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	l.mu.Unlock()
	return l.Listener.Accept()
}

// While Accept keeps failing the listener pauses before each retry, 5 ms after the first failure
// and twice as long after each further one (net/http's schedule): a process out of file
// descriptors is not spun on at full speed.
func TestTCPAcceptBackoffDoubles(t *testing.T) {
	l := newTCPListener("mqtt", "127.0.0.1:0", nil, 5*time.Second)
	var tl *timedListener
	serve(t, l, &l.socket, func(ln net.Listener) net.Listener {
		tl = &timedListener{Listener: &flakyListener{Listener: ln, n: 4, err: emfile()}}
		return tl
	}, echoOne)
	defer l.Close(func(string) {})
	echo(t, l.Address())
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.calls) < 5 {
		t.Fatalf("%d Accept calls, want at least 5 (4 failures, then the connection)", len(tl.calls))
	}
	want := 5 * time.Millisecond
	for i := range 4 {
		if gap := tl.calls[i+1].Sub(tl.calls[i]); gap < want {
			t.Errorf("retry %d came %v after failure %d, want at least %v", i+1, gap, i+1, want)
		}
		want *= 2
	}
}

// A connection that ends with an error is logged at debug level with the error (what an operator
// turns debug on for); one the MQTT server ended cleanly is not.
func TestConnectionEndedWithErrorIsLoggedAtDebug(t *testing.T) {
	for _, kind := range []string{"tcp", "ws"} {
		t.Run(kind, func(t *testing.T) {
			var (
				l     listeners.Listener
				s     *socket
				tr    *tracker
				dial  func() io.Closer
				round func(io.Closer)
			)
			switch kind {
			case "tcp":
				tl := newTCPListener("mqtt", "127.0.0.1:0", nil, 5*time.Second)
				l, s, tr = tl, &tl.socket, &tl.conns
				dial = func() io.Closer {
					c, err := net.Dial("tcp", tl.Address())
					if err != nil {
						t.Fatal(err)
					}
					return c
				}
				round = func(c io.Closer) {
					nc := c.(net.Conn)
					_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := nc.Write([]byte{'x'}); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(nc, make([]byte, 1)); err != nil {
						t.Fatal(err)
					}
				}
			case "ws":
				wl := newWSListener("ws", "127.0.0.1:0", nil, 5*time.Second)
				l, s, tr = wl, &wl.socket, &wl.conns
				dial = func() io.Closer {
					ws, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).Dial("ws://"+wl.Address()+WebSocketPath, nil)
					if err != nil {
						t.Fatal(err)
					}
					return ws
				}
				round = func(c io.Closer) {
					ws := c.(*websocket.Conn)
					_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
					if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'x'}); err != nil {
						t.Fatal(err)
					}
					if _, _, err := ws.ReadMessage(); err != nil {
						t.Fatal(err)
					}
				}
			}
			sv := serve(t, l, s, nil, echoOne)
			defer l.Close(func(string) {})
			idle := func() bool { tr.mu.Lock(); defer tr.mu.Unlock(); return len(tr.conns) == 0 }

			c := dial()
			round(c) // served and ended cleanly on the server's side
			eventually(t, "the clean connection to end", idle)
			_ = c.Close()
			if strings.Contains(sv.logs.String(), "connection ended") {
				t.Fatalf("a connection that ended cleanly was logged:\n%s", sv.logs)
			}
			_ = dial().Close() // ends before sending a byte: establish fails
			eventually(t, "the failed connection's debug line", func() bool {
				s := sv.logs.String()
				return strings.Contains(s, "level=DEBUG") && strings.Contains(s, "connection ended") && strings.Contains(s, "error=")
			})
		})
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling for a state change, not standing in for one
	}
}

// A WebSocket listener whose socket breaks for good says so, as the TCP listener does: Healthy
// reports it stopped and the log says why — and it is not reported as an Accept error being
// retried (Events.AcceptError, "retrying" in the log), since nothing retries it.
func TestWSListenerStopsOnPermanentErrorAndSaysSo(t *testing.T) {
	l := newWSListener("ws", "127.0.0.1:0", nil, 5*time.Second)
	var retried atomic.Int32
	l.health.onError = func(error) { retried.Add(1) }
	sv := serve(t, l, &l.socket, func(ln net.Listener) net.Listener {
		return &flakyListener{Listener: ln, n: 1, err: errors.New("socket is broken")}
	}, echoOne)
	defer l.Close(func(string) {})
	sv.stopped(t)
	if err := l.acceptCheck(time.Now(), 0); err == nil || !strings.Contains(err.Error(), "stopped: socket is broken") {
		t.Fatalf("acceptCheck = %v, want stopped", err)
	}
	logs := sv.logs.String()
	if !strings.Contains(logs, "mqtt listener stopped") {
		t.Errorf("no log line saying the listener stopped:\n%s", logs)
	}
	if n := retried.Load(); n != 0 || strings.Contains(logs, "retrying") {
		t.Errorf("a permanent error reported as retried (%d AcceptError calls):\n%s", n, logs)
	}
}

// Closing a serving WebSocket listener is a shutdown, not a failure: nothing is logged as an
// error and its health shows no stop.
func TestWSListenerCloseIsNotAFailure(t *testing.T) {
	l := newWSListener("ws", "127.0.0.1:0", nil, 5*time.Second)
	sv := serve(t, l, &l.socket, nil, echoOne)
	res, err := http.Get("http://" + l.Address() + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET / = %d, want 404 (only %s serves MQTT)", res.StatusCode, WebSocketPath)
	}
	l.Close(func(string) {})
	sv.stopped(t)
	if err := l.health.check(time.Now(), 0); err != nil {
		t.Errorf("health after Close: %v", err)
	}
	if logs := sv.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("Close logged an error:\n%s", logs)
	}
}

// Close is safe at any point of a listener's life — before it bound, after it bound but before it
// served (the broker closing while Start is still under way) — and a closed listener has let go
// of its port and of its Serve goroutine.
func TestListenerCloseAtAnyPointReleasesThePort(t *testing.T) {
	newTCPListener("a", "127.0.0.1:0", nil, time.Second).Close(func(string) {})
	newWSListener("b", "127.0.0.1:0", nil, time.Second).Close(func(string) {})

	ws := newWSListener("c", "127.0.0.1:0", nil, time.Second)
	if err := ws.Init(slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	addr := ws.Address()
	ws.Close(func(string) {})
	rebind(t, addr)

	tcp := newTCPListener("d", "127.0.0.1:0", nil, time.Second)
	sv := serve(t, tcp, &tcp.socket, nil, echoOne)
	echo(t, tcp.Address())
	addr = tcp.Address()
	tcp.Close(func(string) {})
	sv.stopped(t)
	rebind(t, addr)
}

func rebind(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port of a closed listener still bound: %v", err)
	}
	_ = ln.Close()
}

// A WebSocket connection is a byte stream to mochi: every Read returns bytes or an error, never
// (0, nil) at a frame boundary (io.Reader callers such as bufio give up after 100 empty reads), and
// an empty frame is skipped.
func TestWSConnReadsAcrossFrames(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	got := make(chan []result, 1)
	l := newWSListener("ws", "127.0.0.1:0", nil, 5*time.Second)
	serve(t, l, &l.socket, nil, func(_ string, c net.Conn) error {
		var rs []result
		var data bytes.Buffer
		p := make([]byte, 8)
		for {
			n, err := c.Read(p)
			data.Write(p[:n])
			rs = append(rs, result{n, err})
			if err != nil || len(rs) > 20 {
				break
			}
		}
		rs = append(rs, result{data.Len(), errors.New(data.String())})
		got <- rs
		return nil
	})
	defer l.Close(func(string) {})
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).Dial("ws://"+l.Address()+WebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ab", "", "cd"} {
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	_ = ws.Close()
	var rs []result
	select {
	case rs = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the server side never finished reading")
	}
	data := rs[len(rs)-1].err.Error()
	rs = rs[:len(rs)-1]
	for i, r := range rs[:len(rs)-1] {
		if r.n == 0 || r.err != nil {
			t.Errorf("read %d returned (%d, %v) before the end, want bytes", i, r.n, r.err)
		}
	}
	if last := rs[len(rs)-1]; last.err == nil {
		t.Errorf("no error after the connection closed: %+v", rs)
	}
	if data != "abcd" {
		t.Errorf("read %q, want %q", data, "abcd")
	}
}
