package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/hw"
)

const validConn = "HostName=hub.local;DeviceId=pi-1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"

const base = `
connection:
  connection_string: "` + validConn + `"
outputs:
  led1:
    pin: GPIO17
`

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../configs/agent.yaml")
	if err != nil {
		t.Fatalf("configs/agent.yaml: %v", err)
	}
	if got := strings.Join(c.OutputOrder, ","); got != "act,relay1,buzzer" {
		t.Errorf("outputs in order %s", got)
	}
	if got := strings.Join(c.CommandOrder, ","); got != "identify,reset-load" {
		t.Errorf("commands in order %s", got)
	}
	if c.Hardware.Backend != BackendPeriph || c.Connection.ConnectionStringFile != "/etc/c2d/connection-string" || c.Connection.ConnectionString != "" {
		t.Errorf("example must be a real board's config with the secret in a file: %+v", c.Connection)
	}
	specs := c.Specs()
	want := []hw.OutputSpec{
		{Name: "act", Kind: hw.KindLED, LED: "ACT", Line: -1},
		{Name: "relay1", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1, ActiveLow: true},
		{Name: "buzzer", Kind: hw.KindGPIO, Pin: "GPIO27", Line: -1},
	}
	for i := range want {
		if specs[i] != want[i] {
			t.Errorf("spec %d = %+v, want %+v", i, specs[i], want[i])
		}
	}
	cat := c.Catalog()
	if r := cat.Outputs[1]; r.Name != "relay1" || r.Allows(action.Blink) || !r.Allows(action.Pulse) || r.MaxDuration != 30*time.Second || r.MinInterval != 200*time.Millisecond {
		t.Errorf("relay1 rules %+v", r)
	}
	id := cat.Commands[0]
	if id.Name != "identify" || len(id.Steps) != 2 || id.Steps[0].String() != "blink act 10× (200ms on, 200ms off)" || id.Steps[1].String() != "pulse buzzer for 150ms" {
		t.Errorf("identify = %+v", id)
	}
	if s := cat.Commands[1].Steps[1]; s.Action != action.Wait || s.Duration != 5*time.Second {
		t.Errorf("reset-load wait step = %+v", s)
	}

	// Tests and demos derive a runnable config from the example: same outputs, sim backend, paths
	// in a temp dir, connection string from a file there.
	dir := t.TempDir()
	connFile := filepath.Join(dir, "device.conn")
	if err := os.WriteFile(connFile, []byte(validConn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Connection.ConnectionStringFile = connFile
	c.Hardware = Hardware{Backend: BackendSim, Sim: Sim{StateFile: filepath.Join(dir, "outputs.json")}}
	c.StateDir = dir
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Device.DeviceID != "pi-1" || r.BrokerURL.String() != "ssl://hub.local:8883" || !r.Extension || r.StateDir != dir || len(r.Warnings) != 0 {
		t.Errorf("resolved %+v", r)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Outputs["led1"]
	if c.Connection.KeepAlive.Duration != DefaultKeepAlive || c.Connection.TokenTTL.Duration != time.Hour ||
		c.Connection.Dispositions != DispositionsAuto || c.Hardware.Backend != BackendPeriph || c.ExecutedIDs != 10000 ||
		o.MaxDuration.Duration != time.Minute || o.MaxCount != 100 || o.MinInterval.Duration != 20*time.Millisecond ||
		o.CompleteOn != "finish" || strings.Join(o.Actions, ",") != "on,off,toggle,blink,pulse" || bool(o.Safe) {
		t.Errorf("defaults not applied: %+v %+v", c, o)
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown top key", base + "colour: red\n", `colour: unknown field (known: connection, hardware, state_dir, executed_ids, ready_timeout, outputs, commands, inputs) (line 7)`},
		{"unknown output key", base + "    colour: red\n", `outputs.led1.colour: unknown field (known: pin, chip, line, led, active_low, safe, actions, max_duration, max_count, min_interval, complete_on, desired) (line 7)`},
		{"duplicate key", base + "    pin: GPIO18\n", `outputs.led1.pin: given more than once (line 7)`},
		{"bad duration", base + "    max_duration: 30\n", `outputs.led1.max_duration: "30" is not a duration (e.g. 500ms, 30s, 1h) (line 7)`},
		{"negative duration", base + "    max_duration: -1s\n", `outputs.led1.max_duration: "-1s" is not positive (line 7)`},
		{"bad safe", base + "    safe: maybe\n", `outputs.led1.safe: "maybe" is not on or off (write on or off) (line 7)`},
		{"safe true is not a state", base + "    safe: true\n", `outputs.led1.safe: "true" is not on or off (write on or off) (line 7)`},
		{"tab indentation", "outputs:\n\tled1:\n", `line 2: indented with a tab; YAML indents with spaces only (replace the tab with spaces)`},
		{"bad bool", base + "    active_low: yes\n", `outputs.led1.active_low: "yes" is not true or false (line 7)`},
		{"bad int", base + "    max_count: many\n", `outputs.led1.max_count: "many" is not a whole number (line 7)`},
		{"list expected", base + "    actions: on\n", `outputs.led1.actions: expected a list (line 7)`},
		{"unknown action", base + "    actions: [on, flash]\n", `outputs.led1.actions[1]: unknown action "flash" (actions: on, off, toggle, blink, pulse) (line 7)`},
		{"empty actions", base + "    actions: []\n", `outputs.led1.actions: empty: list at least one action, or leave it out to allow all (line 7)`},
		{"complete_on", base + "    complete_on: later\n", `outputs.led1.complete_on: "later" is not finish or start (line 7)`},
		{"min over max", base + "    min_interval: 2m\n", `outputs.led1.min_interval: 2m exceeds max_duration 1m (line 7)`},
		{"pin and led", base + "    led: ACT\n", `outputs.led1: set exactly one of pin, chip with line, or led (line 5)`},
		{"nothing", "connection:\n  connection_string: \"" + validConn + "\"\noutputs:\n  led1:\n    safe: off\n", `outputs.led1: set exactly one of pin, chip with line, or led (line 4)`},
		{"chip no line", "connection:\n  connection_string: \"" + validConn + "\"\noutputs:\n  b:\n    chip: gpiochip0\n", `outputs.b.line: required with chip (line 5)`},
		{"line no chip", "connection:\n  connection_string: \"" + validConn + "\"\noutputs:\n  b:\n    line: 4\n", `outputs.b.chip: required with line (a chip label such as pinctrl-bcm2711, or gpiochip0) (line 5)`},
		{"duplicate pin", base + "  led2:\n    pin: GPIO17\n", `outputs.led2.pin: pin GPIO17 is already used by outputs.led1 (line 8)`},
		{"duplicate output", base + "  led1:\n    pin: GPIO18\n", `outputs.led1: declared more than once (line 7)`},
		{"active_low led", "connection:\n  connection_string: \"" + validConn + "\"\noutputs:\n  act:\n    led: ACT\n    active_low: true\n", `outputs.act.active_low: applies to GPIO outputs only (line 6)`},
		{"bad name", "connection:\n  connection_string: \"" + validConn + "\"\noutputs:\n  \"my led\":\n    pin: GPIO4\n", `outputs.my led: name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit (line 4)`},
		{"no outputs", "connection:\n  connection_string: \"" + validConn + "\"\n", `outputs: declare at least one output (line 1)`},
		{"no connection", "outputs:\n  a:\n    pin: GPIO4\n", `connection: set connection_string_file (or connection_string) (line 1)`},
		{"both connection", base + "  # x\nconnection2: 1\n", `connection2: unknown field (known: connection, hardware, state_dir, executed_ids, ready_timeout, outputs, commands, inputs) (line 8)`},
		{"bad connection string", "connection:\n  connection_string: \"HostName=hub.local;DeviceId=pi-1\"\noutputs:\n  a:\n    pin: GPIO4\n", `connection.connection_string: invalid connection string: missing credential: one of SharedAccessKey, SharedAccessSignature or x509=true (line 2)`},
		{"x509", "connection:\n  connection_string: \"HostName=hub.local;DeviceId=pi-1;x509=true\"\noutputs:\n  a:\n    pin: GPIO4\n", `connection.connection_string: x509=true: X.509 client certificates are not supported yet; use a SharedAccessKey (line 2)`},
		{"broker scheme", base + "connection2:\n", `connection2: unknown field (known: connection, hardware, state_dir, executed_ids, ready_timeout, outputs, commands, inputs) (line 7)`},
		{"broker url", strings.Replace(base, "connection:\n", "connection:\n  broker_url: http://hub:80\n", 1), `connection.broker_url: scheme "http" not supported (use tcp://, ssl://, ws:// or wss://) (line 3)`},
		{"broker no port", strings.Replace(base, "connection:\n", "connection:\n  broker_url: tcp://hub\n", 1), `connection.broker_url: "tcp://hub" has no port (e.g. tcp://hub:8883) (line 3)`},
		{"broker list entry", strings.Replace(base, "connection:\n", "connection:\n  broker_url: [ssl://n1:8883, tcp://n2]\n", 1), `connection.broker_url[1]: "tcp://n2" has no port (e.g. tcp://n2:8883) (line 3)`},
		{"broker list of lists", strings.Replace(base, "connection:\n", "connection:\n  broker_url: [[ssl://n1:8883]]\n", 1), `connection.broker_url[0]: expected a single value (line 3)`},
		{"dispositions", strings.Replace(base, "connection:\n", "connection:\n  dispositions: sometimes\n", 1), `connection.dispositions: "sometimes" is not one of auto, extension, azure (line 3)`},
		{"keep_alive", strings.Replace(base, "connection:\n", "connection:\n  keep_alive: 1h\n", 1), `connection.keep_alive: 1h is outside 5s..29m27s (Azure's limit is 1767s) (line 3)`},
		{"token_ttl", strings.Replace(base, "connection:\n", "connection:\n  token_ttl: 1m\n", 1), `connection.token_ttl: 1m is outside 5m..8760h (line 3)`},
		{"backoff", strings.Replace(base, "connection:\n", "connection:\n  reconnect_min: 5m\n", 1), `connection.reconnect_min: 5m exceeds reconnect_max 2m (line 3)`},
		{"backend", base + "hardware:\n  backend: gpio\n", `hardware.backend: "gpio" is not one of periph, sim (line 8)`},
		{"sim no state file", base + "hardware:\n  backend: sim\n", `hardware.sim.state_file: required with backend sim (line 8)`},
		{"executed_ids", base + "executed_ids: 5\n", `executed_ids: 5 is outside 100..1000000 (line 7)`},
		{"command no steps", base + "commands:\n  x:\n    description: nothing\n", `commands.x.steps: a command needs at least one step (line 9)`},
		{"command unknown target", base + "commands:\n  x:\n    steps:\n      - {target: led9, action: on}\n", `commands.x.steps[0].target: unknown output "led9" (declared: led1) (line 10)`},
		{"command unknown action", base + "commands:\n  x:\n    steps:\n      - {target: led1, action: dance}\n", `commands.x.steps[0].action: unknown action "dance" (actions: on, off, toggle, blink, pulse) (line 10)`},
		{"command no action", base + "commands:\n  x:\n    steps:\n      - {target: led1}\n", `commands.x.steps[0].action: required (line 10)`},
		{"command pulse no duration", base + "commands:\n  x:\n    steps:\n      - {target: led1, action: pulse}\n", `commands.x.steps[0].duration: required for action pulse (line 10)`},
		{"command count on on", base + "commands:\n  x:\n    steps:\n      - {target: led1, action: on, count: 2}\n", `commands.x.steps[0].count: does not apply to action "on" (line 10)`},
		{"command wait extra", base + "commands:\n  x:\n    steps:\n      - {wait: 1s, target: led1}\n", `commands.x.steps[0]: a wait step takes no other fields (line 10)`},
		{"command empty step", base + "commands:\n  x:\n    steps:\n      - {count: 1}\n", `commands.x.steps[0]: set target and action, or wait (line 10)`},
		{"command unknown step key", base + "commands:\n  x:\n    steps:\n      - {target: led1, action: on, speed: 2}\n", `commands.x.steps[0].speed: unknown field (known: target, action, count, interval, on, off, duration, wait) (line 10)`},
		{"command complete_on", base + "commands:\n  x:\n    complete_on: never\n    steps:\n      - {target: led1, action: on}\n", `commands.x.complete_on: "never" is not finish or start (line 9)`},
		{"not a mapping", "- a\n- b\n", `config: expected a mapping of keys (line 1)`},
		{"yaml syntax", "outputs: [\n", `yaml: line 1: did not find expected node content`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted; want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestValidationJoinsAllErrors(t *testing.T) {
	_, err := Parse([]byte("hardware:\n  backend: gpio\noutputs:\n  a:\n    pin: GPIO4\n    max_count: -1\n"))
	want := "connection: set connection_string_file (or connection_string) (line 1)\n" +
		"hardware.backend: \"gpio\" is not one of periph, sim (line 2)\n" +
		"outputs.a.max_count: -1 is below 1 (line 6)"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got: %v\nwant: %s", err, want)
	}
}

func TestLoadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(base+"    pin2: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), "load "+path+": outputs.led1.pin2: unknown field") {
		t.Fatalf("err = %v", err)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private := write("private.conn", validConn+"\n", 0o600)
	groupRead := write("group.conn", validConn+"\n", 0o640)
	open := write("open.conn", validConn, 0o644)
	azure := write("azure.conn", "HostName=myhub.azure-devices.net;DeviceId=pi-1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", 0o600)
	gateway := write("gw.conn", validConn+";GatewayHostName=edge.lan", 0o600)
	bad := write("bad.conn", "HostName=hub.local", 0o600)
	notPEM := write("ca.pem", "not a certificate", 0o644)

	cfg := func(mut func(c *Config)) *Config {
		c, err := Parse([]byte(strings.Replace(base, `connection_string: "`+validConn+`"`, "connection_string_file: "+private, 1)))
		if err != nil {
			t.Fatal(err)
		}
		mut(c)
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Setenv("STATE_DIRECTORY", "/var/lib/c2d-agent-sd:/other")
	r, err := cfg(func(*Config) {}).Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.BrokerURL.String() != "ssl://hub.local:8883" || r.TLS == nil || r.TLS.ServerName != "hub.local" || !r.Extension || r.StateDir != "/var/lib/c2d-agent-sd" || len(r.Warnings) != 0 {
		t.Errorf("resolved %+v", r)
	}

	r, err = cfg(func(c *Config) { c.Connection.ConnectionStringFile = open }).Resolve()
	if err != nil || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "accessible to others or writable by its group (mode 0644)") {
		t.Errorf("world-readable file: %v %q", err, r.Warnings)
	}

	r, err = cfg(func(c *Config) { c.Connection.ConnectionStringFile = groupRead }).Resolve()
	if err != nil || len(r.Warnings) != 0 {
		t.Errorf("0640 file (the package's layout): %v %q", err, r.Warnings)
	}

	r, err = cfg(func(c *Config) { c.Connection.ConnectionStringFile = azure }).Resolve()
	if err != nil || r.Extension {
		t.Errorf("azure host: extension = %v, err %v", r.Extension, err)
	}
	r, err = cfg(func(c *Config) {
		c.Connection.ConnectionStringFile = azure
		c.Connection.Dispositions = DispositionsExtension
	}).Resolve()
	if err != nil || !r.Extension {
		t.Errorf("forced extension: %v %v", r.Extension, err)
	}

	r, err = cfg(func(c *Config) { c.Connection.ConnectionStringFile = gateway }).Resolve()
	if err != nil || r.BrokerURL.Host != "edge.lan:8883" || r.Device.HostName != "hub.local" {
		t.Errorf("gateway: %v %v", r.BrokerURL, err)
	}

	r, err = cfg(func(c *Config) { c.Connection.BrokerURL = BrokerURLs{"tcp://127.0.0.1:1883"}; c.StateDir = "/x" }).Resolve()
	if err != nil || r.TLS != nil || r.BrokerURL.String() != "tcp://127.0.0.1:1883" || r.StateDir != "/x" {
		t.Errorf("tcp override: %+v %v", r, err)
	}

	// A cluster: several brokers, tried in order; each TLS one is checked for its own name (conn).
	r, err = cfg(func(c *Config) {
		c.Connection.BrokerURL = BrokerURLs{"ssl://n1.lan:8883", "ssl://n2.lan:8883", "tcp://10.0.0.3:1883"}
	}).Resolve()
	if err != nil || r.BrokerURL.Host != "n1.lan:8883" || len(r.Fallbacks) != 2 || r.Fallbacks[0].Host != "n2.lan:8883" ||
		r.Fallbacks[1].String() != "tcp://10.0.0.3:1883" || r.TLS == nil {
		t.Errorf("broker list: %+v %v", r, err)
	}

	_, err = cfg(func(c *Config) { c.Connection.ConnectionStringFile = bad }).Resolve()
	if err == nil || err.Error() != "connection.connection_string_file: "+bad+": invalid connection string: missing DeviceId" {
		t.Errorf("bad file: %v", err)
	}
	_, err = cfg(func(c *Config) { c.Connection.ConnectionStringFile = filepath.Join(dir, "missing") }).Resolve()
	if err == nil || !strings.HasPrefix(err.Error(), "connection.connection_string_file: open ") {
		t.Errorf("missing file: %v", err)
	}
	_, err = cfg(func(c *Config) { c.Connection.CAFile = notPEM }).Resolve()
	if err == nil || err.Error() != "connection.ca_file: no PEM certificates in "+notPEM {
		t.Errorf("bad CA: %v", err)
	}
}

func TestIsAzureHost(t *testing.T) {
	for host, want := range map[string]bool{
		"myhub.azure-devices.net": true, "MyHub.Azure-Devices.NET.": true, "x.azure-devices.cn": true,
		"x.azure-devices.us": true, "x.azure-devices.de": true, "hub.local": false, "azure-devices.net.evil.com": false,
	} {
		if got := IsAzureHost(host); got != want {
			t.Errorf("IsAzureHost(%q) = %v", host, got)
		}
	}
}
