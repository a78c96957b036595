package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/listeners"
)

// The broker brings its own listeners instead of mochi's because mochi's (v2.7.9) TCP listener
// gives a client unlimited time to send CONNECT (a silent socket holds a goroutine forever), and
// its WebSocket listener binds only in Serve (no real address for ":0") and accepts any path.

// tcpListener serves MQTT over TCP, or TLS when tlsConf is set. Every accepted connection must
// finish its TLS handshake and send CONNECT within connectTimeout; mochi then replaces the
// deadline with 1.5 × the client's keep-alive.
type tcpListener struct{ socket }

// socket is what both listeners share: where they bind, with or without TLS, the bound listener
// and the connections it accepted.
type socket struct {
	id, address    string
	tlsConf        *tls.Config
	connectTimeout time.Duration

	health acceptHealth
	pre    *preAuth // bounds connections before CONNECT; nil: none

	mu     sync.Mutex
	ln     net.Listener
	log    *slog.Logger
	closed bool
	done   chan struct{} // closed by Close: ends an accept backoff
	conns  tracker
}

func (l *socket) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// sleep pauses for d, or until Close; it reports whether the listener is still open.
func (l *socket) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !l.isClosed()
	case <-l.done:
		return false
	}
}

// markClosed records Close; it reports whether this was the first call.
func (l *socket) markClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.closed = true
	close(l.done)
	return true
}

func (l *socket) ID() string { return l.id }

// protocol names the listener for mochi's logs: plain, or secure with TLS.
func (l *socket) protocol(plain, secure string) string {
	if l.tlsConf != nil {
		return secure
	}
	return plain
}

// Address is the bound address once Init ran (the real port for ":0"), else the configured one.
func (l *socket) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds, so that Start returns with every port known.
func (l *socket) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	if l.tlsConf != nil {
		ln = tls.NewListener(ln, l.tlsConf)
	}
	l.mu.Lock()
	l.ln, l.log = ln, log
	l.mu.Unlock()
	return nil
}

func newTCPListener(id, address string, tlsConf *tls.Config, connectTimeout time.Duration) *tcpListener {
	return &tcpListener{socket{id: id, address: address, tlsConf: tlsConf, connectTimeout: connectTimeout, done: make(chan struct{})}}
}

func (l *tcpListener) Protocol() string { return l.protocol("mqtt", "mqtts") }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() {
				return
			}
			if !retryable(err) {
				l.log.Error("mqtt listener stopped: accept failed", "error", err)
				l.health.stopped(err)
				return
			}
			// What net/http's Server does: a temporary error (EMFILE when the process is out of
			// file descriptors, ENFILE, ECONNABORTED...) is retried after a pause growing from
			// 5 ms to 1 s. The kernel keeps queueing connections meanwhile; they are served once
			// descriptors are free again.
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			l.health.failed(err, l.log, backoff)
			if !l.sleep(backoff) {
				return
			}
			continue
		}
		backoff = 0
		l.health.accepted()
		if l.pre != nil {
			gc, ok := l.pre.admit(c)
			if !ok {
				_ = c.Close()
				continue
			}
			c = gc
		}
		if !l.conns.add(c) {
			_ = c.Close()
			return
		}
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		go func() {
			defer l.conns.done(c)
			if err := establish(l.id, c); err != nil {
				l.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	first := l.markClosed()
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	if ln != nil && first {
		_ = ln.Close()
	}
	closeClients(l.id)
	l.conns.closeAll()
}

// wsListener serves MQTT over WebSockets (binary frames, subprotocol "mqtt") at WebSocketPath,
// Azure's `wss://{host}:443/$iothub/websocket`.
type wsListener struct {
	socket
	srv      *http.Server // guarded by socket.mu
	upgrader websocket.Upgrader
}

func newWSListener(id, address string, tlsConf *tls.Config, connectTimeout time.Duration) *wsListener {
	return &wsListener{
		socket: socket{id: id, address: address, tlsConf: tlsConf, connectTimeout: connectTimeout, done: make(chan struct{})},
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{"mqtt"},
			HandshakeTimeout: connectTimeout,
			// Devices are not browsers: there is no origin to check, and the SAS token in CONNECT
			// is the credential.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

func (l *wsListener) Protocol() string { return l.protocol("ws", "wss") }

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	mux := http.NewServeMux()
	mux.HandleFunc(WebSocketPath, func(w http.ResponseWriter, r *http.Request) {
		ws, err := l.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader has answered with an HTTP error
		}
		defer ws.Close()
		var nc net.Conn = &wsConn{Conn: ws.UnderlyingConn(), ws: ws}
		if l.pre != nil {
			gc, ok := l.pre.admit(nc)
			if !ok {
				return
			}
			nc = gc
		}
		if !l.conns.add(nc) {
			_ = nc.Close()
			return
		}
		defer l.conns.done(nc)
		_ = nc.SetDeadline(time.Now().Add(l.connectTimeout))
		if err := establish(l.id, nc); err != nil {
			l.log.Debug("connection ended", "remote", r.RemoteAddr, "error", err)
		}
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: l.connectTimeout,
		// http.Server retries temporary Accept errors itself (5 ms … 1 s) and logs each to
		// ErrorLog; watchedListener records them for Healthy and the metrics.
		ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.srv = srv
	ln := &watchedListener{Listener: l.ln, l: &l.socket}
	l.mu.Unlock()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.isClosed() {
		l.log.Error("mqtt listener stopped: accept failed", "error", err)
		l.health.stopped(err)
	}
}

// watchedListener records a WebSocket listener's Accept outcomes for its health.
type watchedListener struct {
	net.Listener
	l       *socket
	backoff time.Duration
}

func (w *watchedListener) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		if !w.l.isClosed() && retryable(err) {
			// http.Server's own backoff, mirrored for the log line.
			w.backoff = min(max(2*w.backoff, 5*time.Millisecond), maxAcceptBackoff)
			w.l.health.failed(err, w.l.log, w.backoff)
		}
		return nil, err
	}
	w.backoff = 0
	w.l.health.accepted()
	return c, nil
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	first := l.markClosed()
	l.mu.Lock()
	srv, ln := l.srv, l.ln
	l.mu.Unlock()
	if first {
		if srv != nil {
			// Hijacked (upgraded) connections are not tracked by the http.Server: closeClients
			// ends them.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = srv.Shutdown(ctx)
			cancel()
		} else if ln != nil {
			_ = ln.Close()
		}
	}
	closeClients(l.id)
	l.conns.closeAll()
}

// tracker knows a listener's live connections. Close closes them all and waits for their
// goroutines: mochi's Server.Close waits on a WaitGroup that each connection goroutine joins
// itself (Add inside the goroutine), so no connection goroutine may still be starting when it
// waits — and a client in the middle of CONNECT, unknown to mochi's client list, is ended too.
type tracker struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func (t *tracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *tracker) done(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	cs := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	t.wg.Wait()
}

// wsConn is a WebSocket connection as a byte stream (net.Conn): MQTT packets may span frames and a
// frame may hold several packets.
type wsConn struct {
	net.Conn
	ws *websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("websocket: MQTT needs binary frames")
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wm.Lock()
	defer c.wm.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }
