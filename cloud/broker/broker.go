package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/listeners"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Core is what the broker needs from the hub core; *hub.Hub satisfies it.
type Core interface {
	Authenticate(ctx context.Context, req hub.AuthRequest) (hub.AuthResult, error)
	Attach(c hub.Conn)
	Detach(c hub.Conn)
	Settle(ctx context.Context, deviceID, lockToken string, d iothub.Disposition, reason string) error
	OnDeviceGone(fn func(deviceID string))
	OnCredentialsChanged(fn func(deviceID string))
}

var _ Core = (*hub.Hub)(nil)

// Listener names, for Addr.
const (
	ListenerMQTT  = "mqtt"  // plain MQTT over TCP
	ListenerMQTTS = "mqtts" // MQTT over TLS
	ListenerWS    = "ws"    // MQTT over WebSockets
	ListenerWSS   = "wss"   // MQTT over WebSockets over TLS
)

// WebSocketPath is where the WebSocket listeners accept MQTT (Azure's path; subprotocol "mqtt").
const WebSocketPath = "/$iothub/websocket"

// MaxPacketSize is the largest MQTT packet a device may send: Azure's 256 KB D2C message plus room
// for a long topic and headers. Device-bound packets are bounded by the hub's 64 KB message rule.
const MaxPacketSize = 256<<10 + 64<<10

// Events are optional observers (metrics); any field may be nil. Calls are synchronous: keep them
// cheap and never call back into the Broker from them.
type Events struct {
	// Connected: a device (or module) session was established.
	Connected func(deviceID, moduleID string)
	// Disconnected: that session ended; err is why (nil for a clean DISCONNECT).
	Disconnected func(deviceID, moduleID string, err error)
	// AuthFailed: a CONNECT was refused (credentials, unknown or disabled device, protocol
	// version; not while shutting down or when the core fails); clientID is what the client
	// claimed, err the reason (never containing the token).
	AuthFailed func(clientID string, err error)
	// DeviceEvent: a device published a device-to-cloud event (reject reports included) with
	// this topic property bag and payload; the hub's event log keeps them for `c2d events`.
	DeviceEvent func(deviceID string, bag iothub.PropertyBag, payload []byte)
	// AcceptError: a listener's Accept failed (out of file descriptors, say); it retries with
	// backoff. listener is ListenerMQTT, ...
	AcceptError func(listener string, err error)
	// Refused: a connection was closed before authentication: RefusedUnauthenticatedLimit or
	// RefusedConnectTooLarge.
	Refused func(reason string)
}

// Options configure a Broker. An empty address turns that listener off; ":0" picks a free port.
type Options struct {
	MQTTAddr  string // plain TCP
	MQTTSAddr string // TLS; needs TLS
	WSAddr    string // WebSockets at WebSocketPath
	WSSAddr   string // WebSockets over TLS; needs TLS

	TLS *tls.Config

	// ConnectTimeout bounds the time from accepting a connection (TLS handshake included) to
	// reading its CONNECT packet. Zero means 30 s.
	ConnectTimeout time.Duration
	// AuthTimeout bounds one Core.Authenticate call. Zero means 10 s.
	AuthTimeout time.Duration
	// SettleTimeout bounds one Core.Settle call. Zero means 10 s.
	SettleTimeout time.Duration
	// MaxConcurrentAuth bounds the CONNECTs being authenticated at once (a fleet reconnecting
	// after a restart must not flood the store); the others wait, within AuthTimeout. Zero
	// means 2.
	MaxConcurrentAuth int
	// MaxUnauthenticated bounds the connections that have not sent their whole CONNECT yet;
	// beyond it new connections are closed at once (logged, Events.Refused). Zero means
	// DefaultMaxUnauthenticated.
	MaxUnauthenticated int

	Logger *slog.Logger // nil discards
	Events Events

	// Methods hears of direct-method sessions and answers (cloud/methods); nil: methods are off.
	Methods MethodSink
	// Twins serves devices' twin requests (cloud/twin); nil answers them 503.
	Twins TwinSink
}

// MethodSink is what the broker tells the direct-method service (cloud/methods.Service).
type MethodSink interface {
	// MethodsReady: a session of deviceID can take method requests now.
	MethodsReady(deviceID string)
	// MethodResponse: the device answered $rid with status and body.
	MethodResponse(deviceID, rid string, status int, body []byte)
}

// Validate reports the first bad option.
func (o Options) Validate() error {
	if o.MQTTAddr == "" && o.MQTTSAddr == "" && o.WSAddr == "" && o.WSSAddr == "" {
		return errors.New("broker: no listener address given (mqtt, mqtts, ws, wss are all off)")
	}
	if o.TLS == nil && o.MQTTSAddr != "" {
		return fmt.Errorf("broker: mqtts listener %q needs a TLS config", o.MQTTSAddr)
	}
	if o.TLS == nil && o.WSSAddr != "" {
		return fmt.Errorf("broker: wss listener %q needs a TLS config", o.WSSAddr)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"connect timeout", o.ConnectTimeout}, {"auth timeout", o.AuthTimeout}, {"settle timeout", o.SettleTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("broker: %s %v is negative", d.name, d.v)
		}
	}
	if o.MaxUnauthenticated < 0 {
		return fmt.Errorf("broker: max unauthenticated connections %d is negative", o.MaxUnauthenticated)
	}
	if o.MaxConcurrentAuth < 0 {
		return fmt.Errorf("broker: max concurrent auth %d is negative", o.MaxConcurrentAuth)
	}
	return nil
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("broker: closed")

// Broker is the embedded MQTT broker of c2d-hub.
type Broker struct {
	core Core
	opts Options
	log  *slog.Logger
	srv  *mqtt.Server

	ctx    context.Context // cancelled by Close: aborts Authenticate/Settle calls in flight
	cancel context.CancelFunc
	auths  chan struct{} // semaphore: Authenticate calls in flight
	pre    *preAuth      // connections before CONNECT, shared by every listener
	// unauthLog logs CONNECTs under one rate limit (ratelog.go): strangers cannot flood the journal.
	unauthLog *slog.Logger
	logLimits *logLimits // per device, across its sessions (ratelog.go)

	// life serialises Attach/Detach decisions so that, for one device, the core always sees
	// Detach(old) before Attach(new). Never held while waiting on anything but the core.
	life sync.Mutex

	mu        sync.RWMutex
	started   bool
	serving   bool // srv.Serve succeeded: Close must close srv
	closed    bool
	conns     map[*mqtt.Client]*conn    // every established session
	devices   map[string]*conn          // device id → its latest (non-module) session
	authed    map[*mqtt.Client]authInfo // authenticated, session not yet established
	listeners map[string]listeners.Listener

	closeOnce sync.Once
	writers   sync.WaitGroup

	// credGen counts the core's credential changes. A CONNECT records it before Authenticate; a
	// session established after a change that its re-check could not see (it was not registered
	// yet) is re-checked by establish (reverify.go).
	credGen atomic.Uint64
}

// New checks the options and prepares a broker; Start binds the listeners.
func New(core Core, opts Options) (*Broker, error) {
	if core == nil {
		return nil, errors.New("broker: nil core")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 30 * time.Second
	}
	if opts.AuthTimeout == 0 {
		opts.AuthTimeout = 10 * time.Second
	}
	if opts.SettleTimeout == 0 {
		opts.SettleTimeout = 10 * time.Second
	}
	if opts.MaxConcurrentAuth == 0 {
		opts.MaxConcurrentAuth = 2
	}
	if opts.MaxUnauthenticated == 0 {
		opts.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		pre:       &preAuth{max: opts.MaxUnauthenticated, log: log, onRefuse: opts.Events.Refused},
		unauthLog: slog.New(limitedHandler{log.Handler(), newLogLimit(time.Now)}),
		logLimits: newLogLimits(time.Now),
		core:      core,
		opts:      opts,
		log:       log,
		ctx:       ctx,
		cancel:    cancel,
		auths:     make(chan struct{}, opts.MaxConcurrentAuth),
		conns:     map[*mqtt.Client]*conn{},
		devices:   map[string]*conn{},
		authed:    map[*mqtt.Client]authInfo{},
		listeners: map[string]listeners.Listener{},
	}
	return b, nil
}

// clientReadBuffer is mochi's bufio.Reader size per connection.
const clientReadBuffer = 512

// capabilities are Azure's: MQTT 3.1.1 (and 5), QoS 0/1 only, packets up to MaxPacketSize.
func capabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumQos = 1             // QoS 2 subscriptions are granted QoS 1 (a QoS 2 PUBLISH closes the connection: qosHook)
	c.MinimumProtocolVersion = 4 // 3.1.1; Azure refuses 3.1
	c.MaximumPacketSize = MaxPacketSize
	c.SharedSubAvailable = 0
	c.TopicAliasMaximum = 0           // MQTT 5 aliases would hide topics from the ACL check
	c.RetainAvailable = 1             // accepted and ignored like every device publish (deliveryHook)
	c.MaximumClientWritesPending = 64 // mochi's routed-write queue per client; c2d never routes to devices
	c.Compatibilities.NoInheritedPropertiesOnAck = true
	return c
}

// Start binds every configured listener and starts serving; it returns once all are listening.
func (b *Broker) Start() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.started {
		b.mu.Unlock()
		return errors.New("broker: already started")
	}
	b.started = true
	b.mu.Unlock()

	srv := mqtt.New(&mqtt.Options{
		Capabilities:           capabilities(),
		Logger:                 slog.New(quietHandler{b.log.With("component", "mochi").Handler()}),
		SysTopicResendInterval: 3600, // $SYS is unreachable for devices (ACL); keep mochi's ticker idle
		InlineClient:           false,
		// Read through a small buffer: what devices send is PUBACKs and small PUBLISHes, and a
		// large packet is read straight into its own buffer (bufio passes big reads through). The
		// default 2 KiB a connection is 20 MiB of a 10,000-device fleet.
		ClientNetReadBufferSize: clientReadBuffer,
	})
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	fail := func(err error) error {
		_ = srv.Close()
		b.mu.Lock()
		b.listeners = map[string]listeners.Listener{}
		b.mu.Unlock()
		return err
	}
	for _, h := range []mqtt.Hook{&authHook{b: b}, &qosHook{b: b}, &v311Hook{b: b}, &sessionHook{b: b}, &methodHook{b: b}, &twinHook{b: b}, &deliveryHook{b: b}} {
		if err := srv.AddHook(h, nil); err != nil {
			return fail(fmt.Errorf("broker: add hook %s: %w", h.ID(), err))
		}
	}
	type spec struct {
		name, addr string
		tls, ws    bool
	}
	specs := []spec{
		{ListenerMQTT, b.opts.MQTTAddr, false, false},
		{ListenerMQTTS, b.opts.MQTTSAddr, true, false},
		{ListenerWS, b.opts.WSAddr, false, true},
		{ListenerWSS, b.opts.WSSAddr, true, true},
	}
	for _, s := range specs {
		if s.addr == "" {
			continue
		}
		var tlsConf *tls.Config
		if s.tls {
			tlsConf = b.opts.TLS
		}
		var l listeners.Listener
		var onErr func(error)
		if f := b.opts.Events.AcceptError; f != nil {
			name := s.name
			onErr = func(err error) { f(name, err) }
		}
		if s.ws {
			wl := newWSListener(s.name, s.addr, tlsConf, b.opts.ConnectTimeout)
			wl.health.onError, wl.pre = onErr, b.pre
			l = wl
		} else {
			tl := newTCPListener(s.name, s.addr, tlsConf, b.opts.ConnectTimeout)
			tl.health.onError, tl.pre = onErr, b.pre
			l = tl
		}
		if err := srv.AddListener(l); err != nil {
			return fail(fmt.Errorf("broker: listen %s on %s: %w", s.name, s.addr, err))
		}
		b.mu.Lock()
		b.listeners[s.name] = l
		b.mu.Unlock()
	}
	b.core.OnDeviceGone(func(deviceID string) {
		// Asynchronous: the core may call this with its own locks held, and dropping a session
		// ends in Core.Detach.
		go b.DisconnectDevice(deviceID, "device deleted or disabled")
	})
	b.core.OnCredentialsChanged(func(deviceID string) {
		b.credGen.Add(1) // before the re-check takes its list of sessions (reverify.go)
		go b.reverify(deviceID)
	})
	if err := srv.Serve(); err != nil {
		return fail(fmt.Errorf("broker: serve: %w", err))
	}
	b.mu.Lock()
	b.serving = true // from here on Close closes srv
	b.mu.Unlock()
	b.mu.RLock()
	for name, l := range b.listeners {
		b.log.Info("mqtt listening", "listener", name, "address", l.Address())
	}
	b.mu.RUnlock()
	return nil
}

// Addr returns the bound address of a listener (ListenerMQTT, ...), "" when it is off.
func (b *Broker) Addr(name string) string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if l, ok := b.listeners[name]; ok {
		return l.Address()
	}
	return ""
}

// Connected returns the number of established device and module sessions.
func (b *Broker) Connected() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.conns)
}

// DisconnectDevice drops every session of a device (and of its modules). The core hears of it
// through Detach.
func (b *Broker) DisconnectDevice(deviceID, why string) {
	b.mu.RLock()
	var victims []*conn
	for _, c := range b.conns {
		if c.deviceID == deviceID {
			victims = append(victims, c)
		}
	}
	b.mu.RUnlock()
	for _, c := range victims {
		c.log.Info("dropping device session", "reason", why)
		b.kick(c.cl, packets.ErrNotAuthorized)
	}
}

// Close stops accepting connections, disconnects every client, detaches every session from the
// core (its in-flight messages go back to Enqueued there) and waits for the broker's goroutines.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		serving := b.serving
		b.mu.Unlock()
		b.cancel()
		// Close the established sessions first: mochi's shutdown would send them a DISCONNECT,
		// which MQTT 3.1.1 does not allow from a server.
		b.mu.RLock()
		for cl := range b.conns {
			cl.Stop(packets.ErrServerShuttingDown)
		}
		b.mu.RUnlock()
		if serving {
			// Closes the listeners, sends DISCONNECT (v5) and closes every client, and waits for
			// every client goroutine: each one runs OnDisconnect, which detaches its session.
			_ = b.srv.Close()
		}
		// Belt and braces: a session whose goroutine ended without OnDisconnect.
		b.mu.Lock()
		left := make([]*conn, 0, len(b.conns))
		for _, c := range b.conns {
			left = append(left, c)
		}
		b.mu.Unlock()
		for _, c := range left {
			b.endSession(c, ErrClosed)
		}
		b.writers.Wait()
		b.log.Info("mqtt broker stopped")
	})
	return nil
}

// kick ends a client's connection: MQTT 5 clients get a DISCONNECT with the reason first; 3.1.1
// has no server DISCONNECT, so the socket is just closed (what Azure does).
func (b *Broker) kick(cl *mqtt.Client, code packets.Code) {
	b.mu.RLock()
	srv := b.srv
	b.mu.RUnlock()
	if cl.Properties.ProtocolVersion >= 5 && srv != nil {
		_ = srv.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}

// quietHandler passes mochi's own records at Warn and above, minus its message-less per-connection
// "listener" warnings (failed CONNECTs, which the auth hook already logs with the reason).
type quietHandler struct{ h slog.Handler }

func (q quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && q.h.Enabled(ctx, l)
}

func (q quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		return nil
	}
	return q.h.Handle(ctx, r)
}

func (q quietHandler) WithAttrs(as []slog.Attr) slog.Handler { return quietHandler{q.h.WithAttrs(as)} }
func (q quietHandler) WithGroup(n string) slog.Handler       { return quietHandler{q.h.WithGroup(n)} }
