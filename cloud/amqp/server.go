package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Hub is what the AMQP endpoints need of the hub core (*hub.Hub implements it).
type Hub interface {
	Send(ctx context.Context, deviceID string, req iothub.SendRequest) (iothub.SendResult, error)
	ReceiveFeedback(ctx context.Context) (*iothub.FeedbackBatch, error)
	CompleteFeedback(ctx context.Context, lockToken string) error
	AbandonFeedback(ctx context.Context, lockToken string) error
	Attach(c hub.Conn)
	Detach(c hub.Conn)
	Settle(ctx context.Context, deviceID, lockToken string, d iothub.Disposition, reason string) error
	Authenticate(ctx context.Context, req hub.AuthRequest) (hub.AuthResult, error)
	Policy(name string) (hub.Policy, bool)
}

// Options configure a Server.
type Options struct {
	Hub      Hub
	HostName string // the hub's name: tokens are signed for it
	Logger   *slog.Logger
	// IdleTimeout is the idle-time-out we advertise: a peer silent for longer (plus a quarter for
	// the network) is closed with amqp:connection:forced. 0 means 4 minutes (Azure's 240000 ms).
	IdleTimeout time.Duration
	// MaxFrameSize is the largest frame we read; 0 means 256 KiB.
	MaxFrameSize uint32
	// AuthTimeout is how long a connection may stay open without a valid token (put on $cbs or
	// given by SASL PLAIN) before it is closed with amqp:unauthorized-access; 0 means 1 minute.
	AuthTimeout time.Duration
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
	// Events are optional callbacks for metrics.
	Events Events
}

// Events report what the server did, for metrics. Each may be nil; each must return quickly (it
// runs with a connection's lock held).
type Events struct {
	// Token is called for every SAS token a client presents, on $cbs or by SASL PLAIN.
	Token func(TokenResult)
}

// TokenResult is what became of a presented SAS token.
type TokenResult string

// The token results: a first token for an audience on a connection, a later one for the same
// audience (Azure's SDKs renew every 45 minutes on the same connection), and a refused one.
const (
	TokenAccepted TokenResult = "accepted"
	TokenRenewed  TokenResult = "renewed"
	TokenRefused  TokenResult = "refused"
)

func (s *Server) tokenEvent(r TokenResult) {
	if s.opt.Events.Token != nil {
		s.opt.Events.Token(r)
	}
}

// WebSocketPath is where Azure's SDKs open AMQP over WebSockets (on the HTTPS port), with
// subprotocol WebSocketProtocol.
const (
	WebSocketPath     = "/$iothub/websocket"
	WebSocketProtocol = "AMQPWSB10"
)

// Server accepts AMQP connections for the hub.
type Server struct {
	opt Options
	log *slog.Logger

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[*conn]bool
	closed bool
	wg     sync.WaitGroup // accept loops, connections and their hub calls

	upgrader websocket.Upgrader
}

// New makes a server; it serves once Listen or ServeConn is called.
func New(opt Options) *Server {
	if opt.IdleTimeout == 0 {
		opt.IdleTimeout = 4 * time.Minute
	}
	if opt.AuthTimeout == 0 {
		opt.AuthTimeout = time.Minute
	}
	if opt.MaxFrameSize == 0 {
		opt.MaxFrameSize = 256 << 10
	}
	opt.MaxFrameSize = max(opt.MaxFrameSize, 4096)
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opt: opt, log: opt.Logger, conns: map[*conn]bool{}}
	s.upgrader = websocket.Upgrader{
		Subprotocols:    []string{WebSocketProtocol},
		CheckOrigin:     func(*http.Request) bool { return true }, // not a browser API: auth is the SAS token
		ReadBufferSize:  16 << 10,
		WriteBufferSize: 16 << 10,
	}
	return s
}

func (s *Server) now() time.Time {
	if s.opt.Now != nil {
		return s.opt.Now()
	}
	return time.Now()
}

// Listen binds addr (TLS when tc is set: amqps) and accepts in the background. It returns the
// bound address.
func (s *Server) Listen(addr string, tc *tls.Config) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	if tc != nil {
		tc = tc.Clone()
		tc.NextProtos = []string{"amqp"}
		ln = tls.NewListener(ln, tc)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return "", errors.New("amqp server closed")
	}
	s.lns = append(s.lns, ln)
	s.wg.Add(1)
	s.mu.Unlock()
	go s.accept(ln)
	return ln.Addr().String(), nil
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("amqp accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go s.ServeConn(nc)
	}
}

// ServeConn serves one connection until it ends (a TLS connection handshakes on first read).
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	c.serve()
}

// ServeHTTP upgrades a request on WebSocketPath to AMQP over WebSockets (subprotocol AMQPWSB10).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "AMQP over WebSockets: open a WebSocket with subprotocol "+WebSocketProtocol, http.StatusBadRequest)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	if ws.Subprotocol() != WebSocketProtocol {
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseProtocolError, "subprotocol "+WebSocketProtocol+" required"),
			time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	s.ServeConn(newWSConn(ws))
}

// Connections is the number of open AMQP connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops the listeners, closes every connection (with amqp:connection:forced) and waits for
// their hub calls to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	lns := s.lns
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close amqp listener %s: %w", ln.Addr(), err))
		}
	}
	for _, c := range conns {
		c.mu.Lock()
		if !c.ending {
			c.ending = true
			c.send(0, &frames.PerformClose{Error: amqpError(condForced, "c2d-hub is shutting down")})
		}
		c.mu.Unlock()
		c.finishWrites()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
