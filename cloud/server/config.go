package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/hub"
)

// Off disables a listener (an empty address in the config file does too).
const Off = "off"

// Default listen addresses (docs/api.md): plain MQTT and HTTP stay on loopback unless asked; the
// TLS listeners are what devices and operators on other machines use.
const (
	DefaultMQTTAddr  = "127.0.0.1:1883"
	DefaultMQTTSAddr = "0.0.0.0:8883"
	DefaultHTTPAddr  = "127.0.0.1:8080"
	DefaultHTTPSAddr = "0.0.0.0:8443"
	DefaultAMQPSAddr = "0.0.0.0:5671" // Azure's service SDKs' default port
)

// Config is c2d-hub serve's whole configuration, resolved once: defaults, then the YAML file, then
// flags. configs/hub.yaml documents every field.
type Config struct {
	// DataDir holds hub.db, tls/ and endpoints.json. Default: $STATE_DIRECTORY (systemd), else
	// $XDG_STATE_HOME/c2d-hub, else ~/.local/state/c2d-hub.
	DataDir string `yaml:"data_dir"`
	// HostName is the name devices and services sign SAS tokens for and that the generated
	// certificate carries. Default: the machine's host name.
	HostName string `yaml:"hostname"`
	// Store is where the hub's state lives: "" or "sqlite" for DATA/hub.db (one node), or a
	// PostgreSQL connection string (postgres://user@host/db or "host=… dbname=…") that the
	// nodes of a cluster share. Default: $C2D_HUB_STORE, else sqlite. A password is better kept
	// in $C2D_HUB_STORE (systemd EnvironmentFile=) or ~/.pgpass than in this file.
	Store string `yaml:"store"`
	// NodeID names this node in a cluster (metrics, c2d hub status). Default: the host name.
	NodeID   string    `yaml:"node_id"`
	Listen   Listen    `yaml:"listen"`
	TLS      TLSFiles  `yaml:"tls"`
	Queue    Queue     `yaml:"queue"`
	Feedback Feedback  `yaml:"feedback"`
	Auth     Auth      `yaml:"auth"`
	Log      LogConfig `yaml:"log"`
	// APIURL is where the other nodes of a cluster reach this node's service API, to pass it
	// direct methods for the devices it holds: https://host:port. Default: the HTTPS listener
	// (the hostname when it listens on every address), else the HTTP listener.
	APIURL string `yaml:"api_url"`
}

// Auth is what bounds credentials and strangers (docs/security.md).
type Auth struct {
	// MaxTokenLifetime: a device SAS token expiring further ahead is refused (hub.Config).
	MaxTokenLifetime Duration `yaml:"max_token_lifetime"`
	// MaxUnauthenticated: connections that have not sent their whole CONNECT yet, across every
	// MQTT listener; beyond it new ones are closed at once and it is logged.
	MaxUnauthenticated int `yaml:"max_unauthenticated"`
}

// Listen holds listener addresses: host:port, port 0 for any free port, "off" or "" to disable.
type Listen struct {
	MQTT  string `yaml:"mqtt"`
	MQTTS string `yaml:"mqtts"`
	HTTP  string `yaml:"http"`
	HTTPS string `yaml:"https"`
	WS    string `yaml:"ws"`  // MQTT over WebSockets
	WSS   string `yaml:"wss"` // MQTT over WebSockets over TLS
	// AMQP 1.0 for Azure's service SDKs and AMQP device transports (AMQP over WebSockets is on
	// the HTTPS listener at /$iothub/websocket).
	AMQPS string `yaml:"amqps"`
	AMQP  string `yaml:"amqp"` // plain AMQP (no TLS), off by default: for loopback tests
	// Debug serves net/http/pprof (CPU, heap, allocation, goroutine and mutex profiles) for
	// profiling a running hub. Off by default; loopback addresses only (checkDebugAddr).
	Debug string `yaml:"debug"`
}

// TLSFiles names a certificate and key to serve; both empty means the hub's own CA in DATA/tls.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Queue is the cloud-to-device queue settings (hub.Config).
type Queue struct {
	DefaultTTL       Duration `yaml:"default_ttl"`
	MinTTL           Duration `yaml:"min_ttl"`
	MaxTTL           Duration `yaml:"max_ttl"`
	LockTimeout      Duration `yaml:"lock_timeout"`
	MaxDeliveryCount int      `yaml:"max_delivery_count"`
	MaxQueueDepth    int      `yaml:"max_queue_depth"`
	MaxInFlight      int      `yaml:"max_in_flight"`
	SettledRetention Duration `yaml:"settled_retention"`
}

// Feedback is the delivery-feedback settings (hub.Config).
type Feedback struct {
	BatchSize        int      `yaml:"batch_size"`
	Interval         Duration `yaml:"interval"`
	TTL              Duration `yaml:"ttl"`
	LockTimeout      Duration `yaml:"lock_timeout"`
	MaxDeliveryCount int      `yaml:"max_delivery_count"`
}

// LogConfig selects slog's level and format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Duration is a time.Duration written with a unit in YAML ("90s", "1h"): a bare number is refused,
// because yaml would otherwise read `ttl: 60` as 60 nanoseconds.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 30s or 1h", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want a number with a unit: 500ms, 30s, 1h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default returns the built-in configuration (hub settings are Azure's values).
func Default() Config {
	h := hub.Config{}.Defaults()
	return Config{
		Listen: Listen{MQTT: DefaultMQTTAddr, MQTTS: DefaultMQTTSAddr, HTTP: DefaultHTTPAddr, HTTPS: DefaultHTTPSAddr, WS: Off, WSS: Off, AMQPS: DefaultAMQPSAddr, AMQP: Off, Debug: Off},
		Queue: Queue{
			DefaultTTL: Duration(h.DefaultTTL), MinTTL: Duration(h.MinTTL), MaxTTL: Duration(h.MaxTTL),
			LockTimeout: Duration(h.LockTimeout), MaxDeliveryCount: h.MaxDeliveryCount,
			MaxQueueDepth: h.MaxQueueDepth, MaxInFlight: h.MaxInFlight, SettledRetention: Duration(h.SettledRetention),
		},
		Feedback: Feedback{
			BatchSize: h.FeedbackBatchSize, Interval: Duration(h.FeedbackInterval), TTL: Duration(h.FeedbackTTL),
			LockTimeout: Duration(h.FeedbackLockTimeout), MaxDeliveryCount: h.FeedbackMaxDeliveryCount,
		},
		Auth: Auth{MaxTokenLifetime: Duration(h.MaxTokenLifetime), MaxUnauthenticated: broker.DefaultMaxUnauthenticated},
		Log:  LogConfig{Level: "info", Format: "text"},
	}
}

// Load returns the defaults overlaid with the YAML file at path (strict: unknown keys are errors).
// An empty path returns the defaults. Errors start with "load {path}:".
func Load(path string) (Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	cfg, err = Parse(f)
	if err != nil {
		return cfg, fmt.Errorf("load %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads a YAML configuration over the defaults and validates it.
func Parse(r io.Reader) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, yamlError(err)
	}
	// One document per file: a second one would be silently ignored otherwise.
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, errors.New("more than one YAML document; want exactly one")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// yamlError flattens yaml's multi-line "unmarshal errors" into one line.
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = yamlMessage(m)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return errors.New(yamlMessage(err.Error()))
}

// Resolve fills the settings whose defaults come from the environment: the data directory and
// the host name. It does not validate.
func (c *Config) Resolve() error {
	if c.DataDir == "" {
		d, err := DefaultDataDir()
		if err != nil {
			return err
		}
		c.DataDir = d
	}
	if c.HostName == "" {
		// Devices sign their SAS tokens for this name and connect to it; the machine's own name is
		// the only zero-set-up guess that works from other machines on a LAN. Set --hostname to the
		// DNS name devices really use.
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.HostName = strings.ToLower(h)
	}
	if c.Store == "" {
		c.Store = os.Getenv("C2D_HUB_STORE")
	}
	if c.NodeID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "node"
		}
		c.NodeID = h
	}
	return nil
}

// DefaultDataDir is $STATE_DIRECTORY (set by systemd's StateDirectory=; the first of a
// colon-separated list), else $XDG_STATE_HOME/c2d-hub, else ~/.local/state/c2d-hub.
func DefaultDataDir() (string, error) {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		first, _, _ := strings.Cut(d, ":")
		return first, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "c2d-hub"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("data directory: no --data, $STATE_DIRECTORY, $XDG_STATE_HOME or home directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "c2d-hub"), nil
}

// HubConfig is the hub core's part of the configuration.
func (c Config) HubConfig() hub.Config {
	return hub.Config{
		HostName:                 c.HostName,
		Store:                    c.Store,
		NodeID:                   c.NodeID,
		DefaultTTL:               time.Duration(c.Queue.DefaultTTL),
		MinTTL:                   time.Duration(c.Queue.MinTTL),
		MaxTTL:                   time.Duration(c.Queue.MaxTTL),
		LockTimeout:              time.Duration(c.Queue.LockTimeout),
		MaxDeliveryCount:         c.Queue.MaxDeliveryCount,
		MaxQueueDepth:            c.Queue.MaxQueueDepth,
		MaxInFlight:              c.Queue.MaxInFlight,
		SettledRetention:         time.Duration(c.Queue.SettledRetention),
		FeedbackBatchSize:        c.Feedback.BatchSize,
		FeedbackInterval:         time.Duration(c.Feedback.Interval),
		FeedbackTTL:              time.Duration(c.Feedback.TTL),
		FeedbackLockTimeout:      time.Duration(c.Feedback.LockTimeout),
		FeedbackMaxDeliveryCount: c.Feedback.MaxDeliveryCount,
		MaxTokenLifetime:         time.Duration(c.Auth.MaxTokenLifetime),
	}
}

// hubKeys maps hub.Config.Validate's field names to this file's YAML paths.
var hubKeys = map[string]string{
	"default_ttl":                 "queue.default_ttl",
	"min_ttl":                     "queue.min_ttl",
	"max_ttl":                     "queue.max_ttl",
	"lock_timeout":                "queue.lock_timeout",
	"max_delivery_count":          "queue.max_delivery_count",
	"max_queue_depth":             "queue.max_queue_depth",
	"max_in_flight":               "queue.max_in_flight",
	"settled_retention":           "queue.settled_retention",
	"feedback_batch_size":         "feedback.batch_size",
	"feedback_interval":           "feedback.interval",
	"feedback_ttl":                "feedback.ttl",
	"feedback_lock_timeout":       "feedback.lock_timeout",
	"feedback_max_delivery_count": "feedback.max_delivery_count",
	"hostname":                    "hostname",
	"max_token_lifetime":          "auth.max_token_lifetime",
}

// Validate reports the first bad setting, named by its YAML path
// ("queue.max_delivery_count: 0 is out of range [1, 100]"). Fields still empty are not errors
// when Resolve would fill them (data_dir, hostname).
func (c Config) Validate() error {
	for _, l := range []struct{ key, addr string }{
		{"listen.mqtt", c.Listen.MQTT}, {"listen.mqtts", c.Listen.MQTTS}, {"listen.http", c.Listen.HTTP},
		{"listen.https", c.Listen.HTTPS}, {"listen.ws", c.Listen.WS}, {"listen.wss", c.Listen.WSS},
		{"listen.amqps", c.Listen.AMQPS}, {"listen.amqp", c.Listen.AMQP},
	} {
		if err := checkAddr(l.addr); err != nil {
			return fmt.Errorf("%s: %w", l.key, err)
		}
	}
	if err := checkDebugAddr(c.Listen.Debug); err != nil {
		return fmt.Errorf("listen.debug: %w", err)
	}
	if c.Store != "" && c.Store != "sqlite" && !hub.IsPostgresURL(c.Store) {
		return errors.New("store: want sqlite, a postgres:// URL or a PostgreSQL key=value connection string")
	}
	if len(c.NodeID) > 64 || strings.ContainsAny(c.NodeID, " \t\r\n/") {
		return fmt.Errorf("node_id: %q: want up to 64 characters without spaces or '/'", c.NodeID)
	}
	if c.APIURL != "" {
		u, err := url.Parse(c.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("api_url: %q: want https://host:port (or http://host:port)", c.APIURL)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together (set both, or neither for the generated CA)")
	}
	if c.Auth.MaxUnauthenticated < 1 || c.Auth.MaxUnauthenticated > 1<<20 {
		return fmt.Errorf("auth.max_unauthenticated: %d is out of range [1, %d]", c.Auth.MaxUnauthenticated, 1<<20)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	hc := c.HubConfig()
	if hc.HostName == "" {
		hc.HostName = "localhost" // filled by Resolve
	}
	if err := hc.Validate(); err != nil {
		key, rest, ok := strings.Cut(err.Error(), ": ")
		if path, known := hubKeys[key]; ok && known {
			return fmt.Errorf("%s: %s", path, rest)
		}
		return err
	}
	return nil
}

// enabled reports whether a listener address is on.
func enabled(addr string) bool { return addr != "" && addr != Off }

func checkAddr(addr string) error {
	if !enabled(addr) {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (or %q): %v", addr, Off, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not 0–65535", addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: bad host %q", addr, host)
	}
	return nil
}
