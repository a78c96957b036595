package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The shipped configs/hub.yaml loads, and its values are exactly the built-in defaults: it
// documents them, so they must not drift apart.
func TestShippedConfigIsTheDefaults(t *testing.T) {
	cfg, err := Load("../../configs/hub.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != Default() {
		t.Fatalf("configs/hub.yaml = %+v\ndefaults       = %+v", cfg, Default())
	}
	// And the defaults are the hub core's.
	if got, want := Default().HubConfig(), (hub.Config{}).Defaults(); got.MaxDeliveryCount != want.MaxDeliveryCount ||
		got.LockTimeout != want.LockTimeout || got.FeedbackInterval != want.FeedbackInterval || got.SettledRetention != want.SettledRetention {
		t.Fatalf("server defaults %+v differ from hub defaults %+v", got, want)
	}
}

func TestLoadOverlaysFile(t *testing.T) {
	p := writeFile(t, `
hostname: hub.example
listen:
  mqtt: "off"
  https: 127.0.0.1:9443
queue:
  lock_timeout: 5s
  max_queue_depth: 3
feedback:
  interval: 50ms
log:
  format: json
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HostName != "hub.example" || cfg.Listen.MQTT != "off" || cfg.Listen.HTTPS != "127.0.0.1:9443" ||
		cfg.Listen.MQTTS != DefaultMQTTSAddr || time.Duration(cfg.Queue.LockTimeout) != 5*time.Second ||
		cfg.Queue.MaxQueueDepth != 3 || cfg.Queue.MaxDeliveryCount != 10 || time.Duration(cfg.Feedback.Interval) != 50*time.Millisecond ||
		cfg.Log.Format != "json" || cfg.Log.Level != "info" {
		t.Fatalf("loaded %+v", cfg)
	}
	hc := cfg.HubConfig()
	if hc.LockTimeout != 5*time.Second || hc.MaxQueueDepth != 3 || hc.FeedbackInterval != 50*time.Millisecond || hc.HostName != "hub.example" {
		t.Fatalf("hub config %+v", hc)
	}
}

func TestLoadErrorsNameTheField(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"delivery count zero", "queue:\n  max_delivery_count: 0\n", "queue.max_delivery_count: 0 is out of range [1, 100]"},
		{"delivery count big", "queue:\n  max_delivery_count: 101\n", "queue.max_delivery_count: 101"},
		{"feedback batch", "feedback:\n  batch_size: 0\n", "feedback.batch_size: 0"},
		{"feedback interval", "feedback:\n  interval: 1ms\n", "feedback.interval: 1ms"},
		{"default ttl above max", "queue:\n  default_ttl: 72h\n", "queue.default_ttl: 72h"},
		{"unknown key", "queue:\n  max_delivery: 5\n", "line 2: queue.max_delivery: unknown key (keys here: default_ttl, min_ttl, max_ttl, lock_timeout, max_delivery_count"},
		{"unknown top key", "listeners:\n  mqtt: x\n", "line 1: listeners: unknown key (keys here: data_dir, hostname, store, node_id, listen"},
		{"bare number duration", "queue:\n  lock_timeout: 60\n", `"60" is not a duration`},
		{"bad address", "listen:\n  mqtt: localhost\n", "listen.mqtt"},
		{"bad port", "listen:\n  http: 127.0.0.1:99999\n", "listen.http"},
		{"log level", "log:\n  level: loud\n", "log.level"},
		{"log format", "log:\n  format: xml\n", "log.format"},
		{"half tls", "tls:\n  cert_file: /x.pem\n", "tls: cert_file and key_file go together"},
		{"hostname", "hostname: a/b\n", "hostname"},
		{"api url scheme", "api_url: 10.0.0.1:8443\n", `api_url: "10.0.0.1:8443": want https://host:port`},
		{"api url path", "api_url: https://n1:8443/api\n", "api_url: "},
		{"not yaml", "queue: [\n", "load "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.body)
			_, err := Load(p)
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.HasPrefix(err.Error(), "load "+p+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want prefix %q and %q", err, "load "+p+": ", tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	cfg, err := Load(writeFile(t, "# nothing set\n"))
	if err != nil || cfg != Default() {
		t.Fatalf("%+v, %v", cfg, err)
	}
}

func TestDefaultDataDir(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/c2d-hub:/var/lib/other")
	if d, _ := DefaultDataDir(); d != "/var/lib/c2d-hub" {
		t.Fatalf("with STATE_DIRECTORY: %q", d)
	}
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", "/xdg/state")
	if d, _ := DefaultDataDir(); d != "/xdg/state/c2d-hub" {
		t.Fatalf("with XDG_STATE_HOME: %q", d)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/pi")
	if d, _ := DefaultDataDir(); d != "/home/pi/.local/state/c2d-hub" {
		t.Fatalf("with HOME: %q", d)
	}
}

func TestResolveFillsHostName(t *testing.T) {
	cfg := Default()
	cfg.DataDir = t.TempDir()
	if err := cfg.Resolve(); err != nil {
		t.Fatal(err)
	}
	want, _ := os.Hostname()
	if cfg.HostName != strings.ToLower(want) || cfg.HostName == "" {
		t.Fatalf("hostname %q, want %q", cfg.HostName, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// hub.yaml errors speak YAML, not Go: no Go type names, the key's path and what is wanted.
func TestYAMLErrorsSpeakYAML(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"queue:\n  lock_timout: 1m\n", "line 2: queue.lock_timout: unknown key (keys here: default_ttl, min_ttl, max_ttl, lock_timeout, max_delivery_count, max_queue_depth, max_in_flight, settled_retention; configs/hub.yaml documents them all)"},
		{"queue:\n  max_queue_depth: ten\n", `line 2: "ten" is not a whole number`},
		{"queue:\n\tmin_ttl: 1m\n", "line 2: a character YAML cannot start a value with; if the line is indented with a tab, indent with spaces only"},
	} {
		p := writeFile(t, tc.body)
		_, err := Load(p)
		if err == nil || err.Error() != "load "+p+": "+tc.want {
			t.Errorf("%q: err = %v\nwant %s", tc.body, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "server.") {
			t.Errorf("error names a Go type: %v", err)
		}
	}
}
