package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/hw"
)

// DefaultPath is where the packaged unit looks for the config.
const DefaultPath = "/etc/c2d/agent.yaml"

// DefaultStateDir holds the executed-id log when neither state_dir nor $STATE_DIRECTORY (systemd's
// StateDirectory=) says otherwise.
const DefaultStateDir = "/var/lib/c2d-agent"

// Backends.
const (
	BackendPeriph = "periph"
	BackendSim    = "sim"
)

// Dispositions modes: whether the agent opts in to c2d's disposition extension.
const (
	DispositionsAuto      = "auto"      // opt in unless HostName is an Azure IoT Hub
	DispositionsExtension = "extension" // always opt in (a c2d-hub, or a gateway that forwards it)
	DispositionsAzure     = "azure"     // never: PUBACK completes, refusals are reported as D2C events
)

// Defaults filled in by Validate for fields left out.
const (
	DefaultKeepAlive      = 60 * time.Second
	DefaultTokenTTL       = time.Hour
	DefaultConnectTimeout = 30 * time.Second
	DefaultReconnectMin   = time.Second
	DefaultReconnectMax   = 2 * time.Minute
	DefaultReadyTimeout   = 30 * time.Second
	DefaultExecutedIDs    = 10000
	DefaultMaxDuration    = time.Minute
	DefaultMaxCount       = 100
	DefaultMinInterval    = 20 * time.Millisecond
)

// Config is agent.yaml, decoded. Load validates it; a Config built in Go must pass Validate.
type Config struct {
	Connection   Connection          `yaml:"connection"`
	Hardware     Hardware            `yaml:"hardware"`
	StateDir     string              `yaml:"state_dir"`
	ExecutedIDs  int                 `yaml:"executed_ids"`
	ReadyTimeout Duration            `yaml:"ready_timeout"`
	Outputs      map[string]*Output  `yaml:"outputs"`
	Commands     map[string]*Command `yaml:"commands"`
	Inputs       map[string]*Input   `yaml:"inputs"`

	// OutputOrder and CommandOrder are the names in the order the file declares them (Validate sorts
	// names missing from them alphabetically, for configs built in Go).
	OutputOrder  []string `yaml:"-"`
	CommandOrder []string `yaml:"-"`
	InputOrder   []string `yaml:"-"`
	// Path is the file the config came from ("" when built in Go); relative paths in the config are
	// taken relative to the working directory, like every other daemon's.
	Path string `yaml:"-"`
}

// Connection is how the agent reaches its hub.
type Connection struct {
	// ConnectionString is `HostName=...;DeviceId=...;SharedAccessKey=...`. Prefer
	// ConnectionStringFile: a secret does not belong in a config that gets copied around.
	ConnectionString     string `yaml:"connection_string"`
	ConnectionStringFile string `yaml:"connection_string_file"`
	// BrokerURL overrides where to connect (tcp://, ssl://, ws://, wss://); default
	// ssl://{GatewayHostName or HostName}:8883. One URL, or a list (the nodes of a c2d-hub
	// cluster): tried in order, the agent stays on the one it connected to.
	BrokerURL      BrokerURLs `yaml:"broker_url"`
	CAFile         string     `yaml:"ca_file"`
	KeepAlive      Duration   `yaml:"keep_alive"`
	TokenTTL       Duration   `yaml:"token_ttl"`
	ConnectTimeout Duration   `yaml:"connect_timeout"`
	ReconnectMin   Duration   `yaml:"reconnect_min"`
	ReconnectMax   Duration   `yaml:"reconnect_max"`
	Dispositions   string     `yaml:"dispositions"`
}

// BrokerURLs is connection.broker_url: one URL (a YAML scalar) or a list of them.
type BrokerURLs []string

// Hardware picks the backend.
type Hardware struct {
	Backend string `yaml:"backend"`
	Sim     Sim    `yaml:"sim"`
}

// Sim configures the simulated backend.
type Sim struct {
	StateFile     string `yaml:"state_file"`     // every output's state, rewritten atomically on each change
	TransitionLog string `yaml:"transition_log"` // optional: one JSON line per transition, appended
	InputsFile    string `yaml:"inputs_file"`    // the simulated inputs' states, watched for changes
}

// Output is one declared output and what messages may do to it.
type Output struct {
	Pin       string `yaml:"pin"`
	Chip      string `yaml:"chip"`
	Line      *int   `yaml:"line"`
	LED       string `yaml:"led"`
	ActiveLow bool   `yaml:"active_low"`
	Safe      State  `yaml:"safe"`

	Actions     []string `yaml:"actions"`
	MaxDuration Duration `yaml:"max_duration"`
	MaxCount    int      `yaml:"max_count"`
	MinInterval Duration `yaml:"min_interval"`
	CompleteOn  string   `yaml:"complete_on"`
	// Desired: the output follows the twin's properties.desired.outputs.<name> ("on"/"off").
	Desired bool `yaml:"desired"`
}

// Command is a named sequence of steps a message runs with `command=<name>`.
type Command struct {
	Description string `yaml:"description"`
	Steps       []Step `yaml:"steps"`
	CompleteOn  string `yaml:"complete_on"`
}

// Step is one step of a command: an action on an output, or a wait.
type Step struct {
	Target   string   `yaml:"target"`
	Action   string   `yaml:"action"`
	Count    int      `yaml:"count"`
	Interval Duration `yaml:"interval"`
	On       Duration `yaml:"on"`
	Off      Duration `yaml:"off"`
	Duration Duration `yaml:"duration"`
	Wait     Duration `yaml:"wait"`
}

// Duration is a config duration in Go syntax with a unit ("500ms", "30s", "1h").
type Duration struct{ time.Duration }

func (d *Duration) setScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 500ms, 30s, 1h)", s)
	}
	if v <= 0 {
		return fmt.Errorf("%q is not positive", s)
	}
	d.Duration = v
	return nil
}

func (d Duration) String() string { return action.FormatDuration(d.Duration) }

// State is an output's logical state in the config: on or off.
type State bool

func (s *State) setScalar(v string) error {
	switch v {
	case "on":
		*s = true
	case "off":
		*s = false
	default:
		// Only on/off: true/false/yes/1 would each be a guess about which one the owner meant.
		return fmt.Errorf("%q is not on or off (write on or off)", v)
	}
	return nil
}

func (s State) String() string {
	if s {
		return "on"
	}
	return "off"
}

// Load reads, decodes and validates path. Errors name the file and the field.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Parse decodes and validates a config document.
func Parse(data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlSyntaxError(data, err)
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("empty config")
	}
	c := &Config{}
	if err := decodeNode("", doc.Content[0], reflect.ValueOf(c).Elem()); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) && fe.Path == "" {
			fe.Path = "config"
		}
		return nil, err
	}
	c.OutputOrder = mappingKeys(&doc, "outputs")
	c.CommandOrder = mappingKeys(&doc, "commands")
	c.InputOrder = mappingKeys(&doc, "inputs")
	if err := c.Validate(); err != nil {
		return nil, withLines(&doc, err)
	}
	return c, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Validate fills defaults and checks the config, naming every bad field (errors are joined, one per
// line, in file order).
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}

	// connection
	cn := &c.Connection
	switch {
	case cn.ConnectionString == "" && cn.ConnectionStringFile == "":
		bad("connection", "set connection_string_file (or connection_string)")
	case cn.ConnectionString != "" && cn.ConnectionStringFile != "":
		bad("connection", "connection_string and connection_string_file are mutually exclusive")
	case cn.ConnectionString != "":
		if _, err := parseDevice(cn.ConnectionString); err != nil {
			bad("connection.connection_string", "%v", err)
		}
	}
	for i, u := range cn.BrokerURL {
		if _, err := parseBrokerURL(u); err != nil {
			field := "connection.broker_url"
			if len(cn.BrokerURL) > 1 {
				field = fmt.Sprintf("connection.broker_url[%d]", i)
			}
			bad(field, "%v", err)
		}
	}
	defaultDuration(&cn.KeepAlive, DefaultKeepAlive)
	defaultDuration(&cn.TokenTTL, DefaultTokenTTL)
	defaultDuration(&cn.ConnectTimeout, DefaultConnectTimeout)
	defaultDuration(&cn.ReconnectMin, DefaultReconnectMin)
	defaultDuration(&cn.ReconnectMax, DefaultReconnectMax)
	if d := cn.KeepAlive.Duration; d < 5*time.Second || d > 1767*time.Second {
		bad("connection.keep_alive", "%s is outside 5s..29m27s (Azure's limit is 1767s)", cn.KeepAlive)
	}
	if d := cn.TokenTTL.Duration; d < 5*time.Minute || d > 365*24*time.Hour {
		bad("connection.token_ttl", "%s is outside 5m..8760h", cn.TokenTTL)
	}
	if cn.ReconnectMin.Duration > cn.ReconnectMax.Duration {
		bad("connection.reconnect_min", "%s exceeds reconnect_max %s", cn.ReconnectMin, cn.ReconnectMax)
	}
	if cn.Dispositions == "" {
		cn.Dispositions = DispositionsAuto
	}
	switch cn.Dispositions {
	case DispositionsAuto, DispositionsExtension, DispositionsAzure:
	default:
		bad("connection.dispositions", "%q is not one of auto, extension, azure", cn.Dispositions)
	}

	// hardware
	if c.Hardware.Backend == "" {
		c.Hardware.Backend = BackendPeriph
	}
	switch c.Hardware.Backend {
	case BackendPeriph:
	case BackendSim:
		if c.Hardware.Sim.StateFile == "" {
			bad("hardware.sim.state_file", "required with backend sim")
		}
	default:
		bad("hardware.backend", "%q is not one of periph, sim", c.Hardware.Backend)
	}

	if c.ExecutedIDs == 0 {
		c.ExecutedIDs = DefaultExecutedIDs
	}
	if c.ExecutedIDs < 100 || c.ExecutedIDs > 1000000 {
		bad("executed_ids", "%d is outside 100..1000000", c.ExecutedIDs)
	}
	defaultDuration(&c.ReadyTimeout, DefaultReadyTimeout)

	// outputs
	c.OutputOrder = order(c.OutputOrder, c.Outputs)
	c.CommandOrder = order(c.CommandOrder, c.Commands)
	if len(c.Outputs) == 0 {
		bad("outputs", "declare at least one output")
	}
	used := map[string]string{} // pin/line/led identity → output path
	for _, name := range c.OutputOrder {
		o := c.Outputs[name]
		p := "outputs." + name
		if !nameRE.MatchString(name) {
			bad(p, "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
		}
		if o == nil {
			bad(p, "empty declaration: set pin, chip with line, or led")
			continue
		}
		errs = append(errs, o.validate(p, used)...)
	}
	errs = append(errs, c.validateInputs(used)...)

	// commands
	for _, name := range c.CommandOrder {
		cmd := c.Commands[name]
		p := "commands." + name
		if !nameRE.MatchString(name) {
			bad(p, "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
		}
		if cmd == nil || len(cmd.Steps) == 0 {
			bad(p+".steps", "a command needs at least one step")
			continue
		}
		if cmd.CompleteOn == "" {
			cmd.CompleteOn = string(action.CompleteOnFinish)
		}
		if !validCompleteOn(cmd.CompleteOn) {
			bad(p+".complete_on", "%q is not finish or start", cmd.CompleteOn)
		}
		for i := range cmd.Steps {
			if err := c.validateStep(fmt.Sprintf("%s.steps[%d]", p, i), &cmd.Steps[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (o *Output) validate(p string, used map[string]string) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	n := 0
	if o.Pin != "" {
		n++
	}
	if o.Chip != "" || o.Line != nil {
		n++
	}
	if o.LED != "" {
		n++
	}
	if n != 1 {
		bad(p, "set exactly one of pin, chip with line, or led")
	}
	claim := func(field, id string) {
		if prev, ok := used[id]; ok {
			bad(p+"."+field, "%s is already used by %s", id, prev)
			return
		}
		used[id] = p
	}
	switch {
	case o.Pin != "":
		if strings.ContainsAny(o.Pin, " \t/") {
			bad(p+".pin", "%q is not a line name (e.g. GPIO17)", o.Pin)
		}
		claim("pin", "pin "+o.Pin)
	case o.Chip != "" || o.Line != nil:
		if o.Chip == "" {
			bad(p+".chip", "required with line (a chip label such as pinctrl-bcm2711, or gpiochip0)")
		} else if o.Line == nil {
			bad(p+".line", "required with chip")
		} else if *o.Line < 0 {
			bad(p+".line", "%d is negative", *o.Line)
		} else {
			claim("line", fmt.Sprintf("chip %s line %d", o.Chip, *o.Line))
		}
	case o.LED != "":
		if strings.ContainsAny(o.LED, "/") || o.LED == "." || o.LED == ".." {
			bad(p+".led", "%q is not an LED name under /sys/class/leds", o.LED)
		}
		if o.ActiveLow {
			bad(p+".active_low", "applies to GPIO outputs only")
		}
		claim("led", "led "+o.LED)
	}
	if o.Actions == nil {
		for _, k := range action.Kinds {
			o.Actions = append(o.Actions, string(k))
		}
	} else if len(o.Actions) == 0 {
		bad(p+".actions", "empty: list at least one action, or leave it out to allow all")
	}
	for i, a := range o.Actions {
		if _, ok := action.ParseKind(a); !ok {
			bad(fmt.Sprintf("%s.actions[%d]", p, i), "unknown action %q (actions: on, off, toggle, blink, pulse)", a)
		}
	}
	defaultDuration(&o.MaxDuration, DefaultMaxDuration)
	defaultDuration(&o.MinInterval, DefaultMinInterval)
	if o.MaxCount == 0 {
		o.MaxCount = DefaultMaxCount
	}
	if o.MaxCount < 1 {
		bad(p+".max_count", "%d is below 1", o.MaxCount)
	}
	if o.MinInterval.Duration > o.MaxDuration.Duration {
		bad(p+".min_interval", "%s exceeds max_duration %s", o.MinInterval, o.MaxDuration)
	}
	if o.CompleteOn == "" {
		o.CompleteOn = string(action.CompleteOnFinish)
	}
	if !validCompleteOn(o.CompleteOn) {
		bad(p+".complete_on", "%q is not finish or start", o.CompleteOn)
	}
	return errs
}

func (c *Config) validateStep(p string, s *Step) error {
	if s.Wait.Duration > 0 {
		if s.Target != "" || s.Action != "" || s.Count != 0 || s.Interval.Duration != 0 || s.On.Duration != 0 || s.Off.Duration != 0 || s.Duration.Duration != 0 {
			return fmt.Errorf("%s: a wait step takes no other fields", p)
		}
		return nil
	}
	if s.Target == "" {
		return fmt.Errorf("%s: set target and action, or wait", p)
	}
	if _, ok := c.Outputs[s.Target]; !ok {
		return fmt.Errorf("%s.target: unknown output %q (declared: %s)", p, s.Target, strings.Join(c.OutputOrder, ", "))
	}
	k, ok := action.ParseKind(s.Action)
	if !ok {
		if s.Action == "" {
			return fmt.Errorf("%s.action: required", p)
		}
		return fmt.Errorf("%s.action: unknown action %q (actions: on, off, toggle, blink, pulse)", p, s.Action)
	}
	timed := map[string]bool{
		"count": s.Count != 0, "interval": s.Interval.Duration != 0, "on": s.On.Duration != 0,
		"off": s.Off.Duration != 0, "duration": s.Duration.Duration != 0,
	}
	for _, f := range []string{"count", "interval", "on", "off", "duration"} {
		applies := (k == action.Blink && f != "duration") || (k == action.Pulse && f == "duration")
		if timed[f] && !applies {
			return fmt.Errorf("%s.%s: does not apply to action %q", p, f, k)
		}
	}
	switch k {
	case action.Blink:
		if s.Count < 0 {
			return fmt.Errorf("%s.count: %d is below 1", p, s.Count)
		}
		if s.Interval.Duration != 0 && (s.On.Duration != 0 || s.Off.Duration != 0) {
			return fmt.Errorf("%s.interval: cannot be combined with on or off", p)
		}
	case action.Pulse:
		if s.Duration.Duration == 0 {
			return fmt.Errorf("%s.duration: required for action pulse", p)
		}
	}
	return nil
}

// Specs lists the outputs for the hardware backend, in config order.
func (c *Config) Specs() []hw.OutputSpec {
	specs := make([]hw.OutputSpec, 0, len(c.OutputOrder))
	for _, name := range c.OutputOrder {
		o := c.Outputs[name]
		s := hw.OutputSpec{Name: name, Kind: hw.KindGPIO, Pin: o.Pin, Chip: o.Chip, Line: -1, ActiveLow: o.ActiveLow, Safe: bool(o.Safe)}
		if o.Line != nil {
			s.Line = *o.Line
		}
		if o.LED != "" {
			s.Kind, s.LED = hw.KindLED, o.LED
		}
		specs = append(specs, s)
	}
	return specs
}

// Catalog is what messages may address, for the action decoder.
func (c *Config) Catalog() *action.Catalog {
	cat := &action.Catalog{}
	for _, name := range c.OutputOrder {
		o := c.Outputs[name]
		r := action.Rules{
			Name: name, MaxDuration: o.MaxDuration.Duration, MaxCount: o.MaxCount,
			MinInterval: o.MinInterval.Duration, CompleteOn: action.CompleteOn(o.CompleteOn),
		}
		for _, a := range o.Actions {
			k, _ := action.ParseKind(a)
			r.Actions = append(r.Actions, k)
		}
		cat.Outputs = append(cat.Outputs, r)
	}
	for _, name := range c.CommandOrder {
		cmd := c.Commands[name]
		ac := action.Command{Name: name, CompleteOn: action.CompleteOn(cmd.CompleteOn)}
		for _, s := range cmd.Steps {
			ac.Steps = append(ac.Steps, s.step())
		}
		cat.Commands = append(cat.Commands, ac)
	}
	return cat
}

// step converts a validated config step, filling blink defaults.
func (s Step) step() action.Step {
	if s.Wait.Duration > 0 {
		return action.Step{Action: action.Wait, Duration: s.Wait.Duration}
	}
	k, _ := action.ParseKind(s.Action)
	st := action.Step{Action: k, Target: s.Target}
	switch k {
	case action.Blink:
		st.Count = s.Count
		if st.Count == 0 {
			st.Count = action.DefaultBlinkCount
		}
		st.On, st.Off = action.DefaultBlinkInterval, action.DefaultBlinkInterval
		if s.Interval.Duration != 0 {
			st.On, st.Off = s.Interval.Duration, s.Interval.Duration
		}
		if s.On.Duration != 0 {
			st.On = s.On.Duration
		}
		if s.Off.Duration != 0 {
			st.Off = s.Off.Duration
		}
	case action.Pulse:
		st.Duration = s.Duration.Duration
	}
	return st
}

func defaultDuration(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func validCompleteOn(s string) bool {
	return s == string(action.CompleteOnFinish) || s == string(action.CompleteOnStart)
}

// order keeps the declared order and appends names it lacks, sorted.
func order[T any](declared []string, m map[string]T) []string {
	out := make([]string, 0, len(m))
	seen := map[string]bool{}
	for _, n := range declared {
		if _, ok := m[n]; ok && !seen[n] {
			out = append(out, n)
			seen[n] = true
		}
	}
	var rest []string
	for n := range m {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}
