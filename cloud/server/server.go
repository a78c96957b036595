package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/c2d-project/c2d/cloud/amqp"
	"github.com/c2d-project/c2d/cloud/api"
	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/methods"
	"github.com/c2d-project/c2d/cloud/twin"
	"github.com/c2d-project/c2d/internal/sdnotify"
	"github.com/c2d-project/c2d/internal/version"
)

// noticeFile marks a data directory whose first-start notice was printed.
const noticeFile = ".first-start-notice"

// EndpointsFile is written to the data directory once every listener is bound.
const EndpointsFile = "endpoints.json"

// Endpoints is DATA/endpoints.json: where a running hub listens (bound addresses, so port 0
// resolves to the real port), its host name and the CA file clients must trust. Tests, `make demo`
// and the CLI read it. PID tells a fresh file from one left by a killed hub.
type Endpoints struct {
	MQTT     string    `json:"mqtt,omitempty"`
	MQTTS    string    `json:"mqtts,omitempty"`
	HTTP     string    `json:"http,omitempty"`
	HTTPS    string    `json:"https,omitempty"`
	WS       string    `json:"ws,omitempty"`
	WSS      string    `json:"wss,omitempty"`
	AMQP     string    `json:"amqp,omitempty"`
	AMQPS    string    `json:"amqps,omitempty"`
	Debug    string    `json:"debug,omitempty"` // net/http/pprof on loopback (listen.debug)
	HostName string    `json:"hostname"`
	CA       string    `json:"ca,omitempty"` // absent when the certificate was given (cert_file)
	PID      int       `json:"pid"`
	Version  string    `json:"version"`
	Started  time.Time `json:"started"`
}

// ReadEndpoints reads DATA/endpoints.json.
func ReadEndpoints(dataDir string) (Endpoints, error) {
	var ep Endpoints
	b, err := os.ReadFile(filepath.Join(dataDir, EndpointsFile))
	if err != nil {
		return ep, err
	}
	if err := json.Unmarshal(b, &ep); err != nil {
		return ep, fmt.Errorf("%s: %w", filepath.Join(dataDir, EndpointsFile), err)
	}
	return ep, nil
}

// NewLogger builds the slog logger cfg asks for, writing to w.
func NewLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Server is a running c2d-hub: the hub core, the MQTT broker and the HTTP service API.
type Server struct {
	cfg    Config
	log    *slog.Logger
	hub    *hub.Hub
	broker *broker.Broker
	// methods is nil when every MQTT listener is off.
	methods *methods.Service
	twins   *twin.Service
	// brokerClosed is set by Shutdown (which closes the broker in parallel with HTTP).
	brokerClosed bool
	api          *api.Server
	amqp         *amqp.Server // nil when every AMQP listener (amqp, amqps, https's WebSockets) is off
	http         []*http.Server
	debug        *http.Server // listen.debug (pprof); nil when off
	ep           Endpoints
	notifier     *sdnotify.Notifier
	errc         chan error
	stopping     atomic.Bool
	httpFailed   atomic.Pointer[error] // an HTTP Serve returned
	wg           sync.WaitGroup
	closeWD      chan struct{}
}

// Run serves until ctx ends (SIGTERM/SIGINT in c2d-hub) or a listener fails, then shuts down
// gracefully. It logs to stderr and prints the first-start notice to stdout.
func Run(ctx context.Context, cfg Config) error {
	log := NewLogger(cfg.Log, os.Stderr)
	s, err := Start(ctx, cfg, log, os.Stdout)
	if err != nil {
		return err
	}
	werr := s.Wait(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		return err
	}
	return werr
}

// Start opens the hub in cfg.DataDir, binds every listener, writes endpoints.json and tells systemd
// it is ready. cfg must be resolved and valid. The first start of a data directory prints the
// iothubowner connection string and the CA's path to stdout.
func Start(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) (_ *Server, err error) {
	if err := cfg.Resolve(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, notifier: sdnotify.FromEnv(), errc: make(chan error, 8), closeWD: make(chan struct{})}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	metrics := api.NewMetrics()
	hc := cfg.HubConfig()
	hc.Logger = log.With("component", "hub")
	s.hub, err = hub.Open(ctx, cfg.DataDir, hc, metrics.HubEvents(nil))
	if err != nil {
		return nil, fmt.Errorf("open hub in %s (%s): %w", cfg.DataDir, hub.StoreName(cfg.Store, cfg.DataDir), err)
	}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	metrics.WatchStatus(s.hub.Status)

	epPath := filepath.Join(cfg.DataDir, EndpointsFile)
	// Only now, holding the data directory's lock: a second hub refused above must not remove the
	// running one's endpoints.
	if rerr := os.Remove(epPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale %s: %w", epPath, rerr)
	}
	// The first-start notice is shown until one start got as far as printing it (a first start
	// that failed on a busy port must not swallow it).
	noticePath := filepath.Join(cfg.DataDir, noticeFile)
	_, statErr := os.Stat(noticePath)
	firstStart := errors.Is(statErr, os.ErrNotExist)

	// TLS material before anything listens: a bad certificate must fail start-up.
	var certs *certSource
	var tlsConf *tls.Config
	if enabled(cfg.Listen.MQTTS) || enabled(cfg.Listen.HTTPS) || enabled(cfg.Listen.WSS) || enabled(cfg.Listen.AMQPS) {
		var tlsAddrs []string
		for _, a := range []string{cfg.Listen.MQTTS, cfg.Listen.HTTPS, cfg.Listen.WSS, cfg.Listen.AMQPS} {
			if enabled(a) {
				tlsAddrs = append(tlsAddrs, a)
			}
		}
		names, ips := certSubjects(cfg.HostName, tlsAddrs)
		if certs, err = loadTLS(cfg, names, ips, log); err != nil {
			return nil, err
		}
		tlsConf = certs.TLSConfig()
	}

	var events *hub.EventLog // device-to-cloud events, when devices can connect
	s.twins = twin.NewService(s.hub, log.With("component", "twins"))
	if s.hub.Node() != "" {
		s.twins.SetRelay(s.hub) // desired changes for boards on other nodes (cluster.go)
	}
	if enabled(cfg.Listen.MQTT) || enabled(cfg.Listen.MQTTS) || enabled(cfg.Listen.WS) || enabled(cfg.Listen.WSS) {
		authFailures := prometheus.NewCounter(prometheus.CounterOpts{
			Name: "c2d_mqtt_auth_failures_total", Help: "MQTT CONNECTs refused (bad or expired token, unknown or disabled device).",
		})
		acceptErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "c2d_mqtt_accept_errors_total", Help: "Failed Accepts on an MQTT listener (retried with backoff; EMFILE means out of file descriptors).",
		}, []string{"listener"})
		refused := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "c2d_mqtt_refused_total", Help: "MQTT connections closed before authentication: unauthenticated_limit (auth.max_unauthenticated reached) or connect_too_large.",
		}, []string{"reason"})
		metrics.Registry().MustRegister(authFailures, acceptErrors, refused)
		events = hub.NewEventLog(0, 0) // served at GET /messages/events (c2d events)
		s.methods = methods.New(s.hub, log.With("component", "methods"))
		bo := broker.Options{
			MQTTAddr: addrOrEmpty(cfg.Listen.MQTT), MQTTSAddr: addrOrEmpty(cfg.Listen.MQTTS),
			WSAddr: addrOrEmpty(cfg.Listen.WS), WSSAddr: addrOrEmpty(cfg.Listen.WSS),
			TLS:    tlsConf,
			Logger: log.With("component", "broker"),
			Events: broker.Events{
				AuthFailed:  func(string, error) { authFailures.Inc() },
				DeviceEvent: events.Add,
				AcceptError: func(l string, _ error) { acceptErrors.WithLabelValues(l).Inc() },
				Refused:     func(reason string) { refused.WithLabelValues(reason).Inc() },
			},
			MaxUnauthenticated: cfg.Auth.MaxUnauthenticated,
			Methods:            s.methods,
			Twins:              s.twins,
		}
		if s.broker, err = broker.New(s.hub, bo); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		s.methods.SetTransport(s.broker)
		s.twins.SetNotifier(s.broker)
		if err = s.broker.Start(); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		metrics.Registry().MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "c2d_mqtt_sessions", Help: "Live MQTT sessions on the embedded broker.",
		}, func() float64 { return float64(s.broker.Connected()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "c2d_mqtt_unauthenticated_connections", Help: "MQTT connections that have not sent their whole CONNECT yet (bounded by auth.max_unauthenticated).",
		}, func() float64 { return float64(s.broker.Unauthenticated()) }))
	} else {
		log.Warn("every MQTT listener is off: devices cannot connect")
	}

	s.api = api.New(api.Options{
		Hub: s.hub, HostName: cfg.HostName, Version: version.Version, Metrics: metrics, Events: events,
		Logger:  log.With("component", "api"),
		Methods: apiMethods(s.methods),
		Twins:   s.twins,
		Ready: func() error {
			if s.stopping.Load() {
				return errors.New("shutting down")
			}
			return s.listenersHealthy()
		},
	})
	s.ep = Endpoints{HostName: cfg.HostName, PID: os.Getpid(), Version: version.Version, Started: time.Now().UTC()}
	if certs != nil && certs.CAFile != "" {
		s.ep.CA = certs.CAFile
	}
	if s.broker != nil {
		s.ep.MQTT, s.ep.MQTTS = s.broker.Addr(broker.ListenerMQTT), s.broker.Addr(broker.ListenerMQTTS)
		s.ep.WS, s.ep.WSS = s.broker.Addr(broker.ListenerWS), s.broker.Addr(broker.ListenerWSS)
	}
	if enabled(cfg.Listen.AMQP) || enabled(cfg.Listen.AMQPS) || enabled(cfg.Listen.HTTPS) {
		tokens := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "c2d_amqp_tokens_total", Help: "SAS tokens presented over AMQP ($cbs put-token or SASL PLAIN): accepted (first for its audience on the connection), renewed (same audience, same connection) or refused.",
		}, []string{"result"})
		for _, r := range []amqp.TokenResult{amqp.TokenAccepted, amqp.TokenRenewed, amqp.TokenRefused} {
			tokens.WithLabelValues(string(r)) // present at 0 from the start
		}
		s.amqp = amqp.New(amqp.Options{Hub: s.hub, HostName: cfg.HostName, Logger: log.With("component", "amqp"),
			Events: amqp.Events{Token: func(r amqp.TokenResult) { tokens.WithLabelValues(string(r)).Inc() }}})
		metrics.Registry().MustRegister(tokens, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "c2d_amqp_connections", Help: "Open AMQP connections (service SDKs and AMQP devices).",
		}, func() float64 { return float64(s.amqp.Connections()) }))
		if enabled(cfg.Listen.AMQP) {
			if s.ep.AMQP, err = s.amqp.Listen(cfg.Listen.AMQP, nil); err != nil {
				return nil, fmt.Errorf("listen.amqp: %w", err)
			}
		}
		if enabled(cfg.Listen.AMQPS) {
			if s.ep.AMQPS, err = s.amqp.Listen(cfg.Listen.AMQPS, tlsConf); err != nil {
				return nil, fmt.Errorf("listen.amqps: %w", err)
			}
		}
	}
	if enabled(cfg.Listen.HTTP) {
		if s.ep.HTTP, err = s.serveHTTP(cfg.Listen.HTTP, nil); err != nil {
			return nil, fmt.Errorf("listen.http: %w", err)
		}
	}
	if enabled(cfg.Listen.HTTPS) {
		if s.ep.HTTPS, err = s.serveHTTP(cfg.Listen.HTTPS, tlsConf); err != nil {
			return nil, fmt.Errorf("listen.https: %w", err)
		}
	}
	if enabled(cfg.Listen.Debug) {
		if s.ep.Debug, err = s.serveDebug(cfg.Listen.Debug); err != nil {
			return nil, fmt.Errorf("listen.debug: %w", err)
		}
	}

	if err = s.joinCluster(ctx); err != nil {
		return nil, err
	}
	if firstStart {
		s.printFirstStart(stdout)
		if err = writeFileAtomic(noticePath, []byte("the first-start notice was printed\n"), 0o600); err != nil {
			return nil, err
		}
	}
	b, _ := json.MarshalIndent(s.ep, "", "  ")
	if err = writeFileAtomic(epPath, append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	var listening []string
	for _, l := range []struct{ name, addr string }{
		{"mqtt", s.ep.MQTT}, {"mqtts", s.ep.MQTTS}, {"ws", s.ep.WS}, {"wss", s.ep.WSS}, {"http", s.ep.HTTP}, {"https", s.ep.HTTPS},
		{"amqp", s.ep.AMQP}, {"amqps", s.ep.AMQPS}, {"debug", s.ep.Debug},
	} {
		if l.addr != "" {
			log.Info("listening", "listener", l.name, "addr", l.addr)
			listening = append(listening, l.name+" "+l.addr)
		}
	}
	log.Info("c2d-hub ready", "version", version.Version, "hostname", cfg.HostName, "data", cfg.DataDir,
		"ca", s.ep.CA, "endpoints", epPath)
	if err := s.notifier.Ready("serving " + strings.Join(listening, ", ")); err != nil {
		log.Warn("sd_notify", "err", err)
	}
	if iv := sdnotify.WatchdogInterval(); iv > 0 {
		s.wg.Add(1)
		go s.watchdog(iv)
	}
	return s, nil
}

// apiMethods keeps a nil *methods.Service a nil api.Methods.
func apiMethods(m *methods.Service) api.Methods {
	if m == nil {
		return nil
	}
	return m
}

func addrOrEmpty(a string) string {
	if enabled(a) {
		return a
	}
	return ""
}

// serveHTTP binds addr and serves the API on it (over TLS when tc is set); it returns the bound
// address.
func (s *Server) serveHTTP(addr string, tc *tls.Config) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	var handler http.Handler = s.api
	if tc != nil && s.amqp != nil {
		// Azure's SDKs open AMQP over WebSockets on the HTTPS port (443 in Azure).
		mux := http.NewServeMux()
		mux.Handle(amqp.WebSocketPath, s.amqp)
		mux.Handle("/", s.api)
		handler = mux
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      api.MaxWait + 30*time.Second, // long-polls answer within MaxWait
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if tc != nil {
		hs.TLSConfig = tc.Clone()
		hs.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	s.http = append(s.http, hs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			err = fmt.Errorf("http %s: %w", ln.Addr(), err)
			s.httpFailed.Store(&err)
			s.errc <- err
		}
	}()
	return ln.Addr().String(), nil
}

func (s *Server) printFirstStart(w io.Writer) {
	pol, ok := s.hub.Policy("iothubowner")
	if !ok {
		s.log.Error("first start: no iothubowner policy in the store")
		return
	}
	cs := iothub.ServiceConnectionString{HostName: s.cfg.HostName, SharedAccessKeyName: pol.Name, SharedAccessKey: pol.PrimaryKey}
	fmt.Fprintf(w, "c2d-hub: first start in %s\n", s.cfg.DataDir)
	if os.Getenv("JOURNAL_STREAM") != "" {
		// Under systemd stdout is the journal, readable by more than root (adm, systemd-journal):
		// say how to read the secret instead of writing it there (issue #17).
		fmt.Fprintf(w, "  the iothubowner connection string (a secret: it can do everything) is not logged; read it with\n"+
			"    sudo -u %s c2d-hub connection-string --data %s\n", currentUser(), s.cfg.DataDir)
	} else {
		fmt.Fprintf(w, "  iothubowner connection string (keep it secret; it can do everything):\n    %s\n", cs)
	}
	if s.ep.CA != "" {
		fmt.Fprintf(w, "  CA certificate for devices and clients to trust: %s\n", s.ep.CA)
	}
	fmt.Fprintf(w, "  print a connection string again: c2d-hub connection-string --data %s [--policy service]\n", s.cfg.DataDir)
}

// currentUser names the user the hub runs as, for the "read it with sudo -u" hint.
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "c2d-hub"
}

// Endpoints returns where the hub listens (as written to endpoints.json).
func (s *Server) Endpoints() Endpoints { return s.ep }

// Hub is the running core (for in-process tests and benchmarks).
func (s *Server) Hub() *hub.Hub { return s.hub }

// Methods is the direct-method service (nil when every MQTT listener is off).
func (s *Server) Methods() *methods.Service { return s.methods }

// Wait blocks until ctx ends (nil) or a listener fails (its error).
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.errc:
		s.log.Error("listener failed; shutting down", "err", err)
		return err
	}
}

// Shutdown stops accepting (HTTP and MQTT), ends long-polls, lets in-flight requests and store
// writes finish, then closes the hub. ctx bounds the wait for in-flight HTTP requests.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.stopping.Swap(true) {
		return nil
	}
	_ = s.notifier.Stopping()
	s.log.Info("shutting down")
	s.api.Drain()
	if s.debug != nil {
		_ = s.debug.Close() // a profile being taken is not worth waiting for
	}
	var wg sync.WaitGroup
	for _, hs := range s.http {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Shutdown(ctx); err != nil {
				s.log.Warn("http shutdown did not finish; closing connections", "err", err)
				_ = hs.Close()
			}
		}()
	}
	if s.amqp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.amqp.Close(); err != nil {
				s.log.Warn("amqp close", "err", err)
			}
		}()
	}
	if s.broker != nil {
		wg.Add(1)
		s.brokerClosed = true
		go func() {
			defer wg.Done()
			if err := s.broker.Close(); err != nil {
				s.log.Warn("broker close", "err", err)
			}
		}()
	}
	closed := make(chan error, 1)
	go func() {
		wg.Wait()
		closed <- s.closeAll()
	}()
	var err error
	select {
	case err = <-closed:
	case <-ctx.Done():
		// Better a bounded stop than a hung one: every acknowledged write is already durable.
		err = fmt.Errorf("shutdown: listeners or store still closing after the deadline: %w", ctx.Err())
	}
	_ = os.Remove(filepath.Join(s.cfg.DataDir, EndpointsFile))
	if err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}

// closeAll closes what is open (the broker if Shutdown did not, then the hub).
func (s *Server) closeAll() error {
	close(s.closeWD)
	for _, hs := range s.http {
		_ = hs.Close()
	}
	if s.debug != nil {
		_ = s.debug.Close()
	}
	if s.broker != nil && !s.brokerClosed {
		_ = s.broker.Close()
	}
	if s.amqp != nil {
		_ = s.amqp.Close() // a second Close finds nothing left to close
	}
	s.wg.Wait()
	if err := s.hub.Close(); err != nil {
		return fmt.Errorf("close hub: %w", err)
	}
	return nil
}

// listenersHealthy reports a listener that is not serving: an MQTT listener failing to accept
// or stopped, or an HTTP server whose Serve returned.
func (s *Server) listenersHealthy() error {
	if err := s.httpFailed.Load(); err != nil {
		return *err
	}
	if s.broker != nil {
		return s.broker.Healthy()
	}
	return nil
}

// watchdogStuck is how long a listener may fail to accept before the watchdog stops pinging.
const watchdogStuck = 5 * time.Minute

// listenersStuck is listenersHealthy for the watchdog (see watchdogStuck).
func (s *Server) listenersStuck() error {
	if err := s.httpFailed.Load(); err != nil {
		return *err
	}
	if s.broker != nil {
		return s.broker.Stuck(watchdogStuck)
	}
	return nil
}

// watchdog pings systemd while the store answers and every listener serves.
func (s *Server) watchdog(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.closeWD:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			_, err := s.hub.Status(ctx)
			cancel()
			if err != nil {
				s.log.Error("watchdog: store does not answer; not pinging systemd", "err", err)
				continue
			}
			// A listener that died, or that has not been able to accept for watchdogStuck, gets
			// the hub restarted. Shorter exhaustion (a reconnect storm) clears by itself, and a
			// restart would drop every session; /healthz says 503 from the first failure.
			if err := s.listenersStuck(); err != nil {
				s.log.Error("watchdog: a listener is not serving; not pinging systemd", "err", err)
				continue
			}
			_ = s.notifier.Watchdog()
		}
	}
}
