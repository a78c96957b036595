package golddoc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// scenario produces what a doc quotes: the text the user sees (stdout or stderr as the doc says).
type scenario func(t *testing.T) string

// Mids the docs show, so their examples are exactly what c2d printed.
const (
	successMid  = "6a1f0c9e-4a57-4c0e-9a8e-0c3a2f1d7b15"
	rejectedMid = "1d9c5e02-8b3f-4f61-a0d4-2f7e9c1b6a30"
)

// blocks are the fenced blocks marked `<!-- golden: NAME -->`.
var blocks = map[string]scenario{
	"send-success": func(t *testing.T) string {
		return want(t, c2d(nil, "send", "pump-7", "--mid", successMid, "--props", "target=relay1;action=pulse;duration=2s", "--wait", "30s"), 0).stdout
	},
	"send-rejected": func(t *testing.T) string {
		out := want(t, c2d(nil, "send", "pump-7", "--mid", rejectedMid, "--props", "target=relay9;action=on", "--wait", "30s"), 3).stdout
		return strings.SplitN(out, "\n", 2)[1] // the doc shows the outcome line
	},
	"config-errors-readme": func(t *testing.T) string {
		return configErrors(t,
			edit{"max_duration: 30s    # longest pulse", `max_duration: "30"    # longest pulse`},
			edit{"{target: buzzer, action: pulse, duration: 150ms}", "{target: buzzr, action: pulse, duration: 150ms}"})
	},
	"config-errors-agent": func(t *testing.T) string {
		return configErrors(t,
			edit{"max_duration: 30s    # longest pulse", `max_duration: "30"    # longest pulse`},
			edit{"    safe: off", "    safe: false"})
	},
	"try": func(t *testing.T) string {
		return strings.ReplaceAll(want(t, runBin("c2d-agent", env, "try", "--config", board, "target=relay1;action=pulse;duration=2s"), 0).stdout, board, "/etc/c2d/agent.yaml")
	},
	"hub-config-error": func(t *testing.T) string {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "hub.yaml")
		if err := os.WriteFile(cfg, []byte("queue:\n  max_delivery_count: 0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := want(t, runBin("c2d-hub", env, "serve", "--config", cfg, "--data", dir), 1)
		return strings.ReplaceAll(r.stderr, cfg, "/etc/c2d/hub.yaml")
	},
	"error-json": func(t *testing.T) string { return fullQueue(t, "-o", "json").stderr },
	"property-examples": func(t *testing.T) string {
		examples := []string{
			"target=relay1 action=pulse duration=2s",
			"target=act action=blink count=5 interval=100ms",
			"target=act action=blink count=3 on=50 off=950",
			"target=relay1 action=off",
			"command=identify",
		}
		for _, e := range examples {
			if r := runBin("c2d-agent", env, "try", "--config", board, e); r.code != 0 || !strings.HasPrefix(r.stdout, "Accepted: ") {
				t.Errorf("the documented example %q is not accepted by configs/agent.yaml: %s", e, r)
			}
		}
		return strings.Join(examples, "\n") + "\n"
	},
	"connect-disabled": func(t *testing.T) string {
		want(t, c2d(nil, "device", "create", "pump-8"), 0)
		want(t, c2d(nil, "device", "disable", "pump-8"), 0)
		dir := t.TempDir()
		conn := filepath.Join(dir, "connection-string")
		if err := os.WriteFile(conn, []byte(want(t, c2d(nil, "device", "connection-string", "pump-8"), 0).stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := boardConfig(dir, conn, "tcp://"+hub.Endpoints.MQTT)
		if err != nil {
			t.Fatal(err)
		}
		return want(t, runBin("c2d-agent", env, "check-config", "--connect", cfg), 1).stderr
	},
}

// tables are the rows of tables marked `<!-- golden-table: NAME -->`, by the quote in their first
// column.
var tables = map[string]map[string]scenario{
	"cli-errors": {
		"cannot reach the hub at ...": func(t *testing.T) string {
			return want(t, c2d([]string{"C2D_ENDPOINT=http://127.0.0.1:1"}, "hub", "status"), 10).stderr
		},
		"cannot trust the hub's TLS certificate at ...": func(t *testing.T) string {
			return want(t, c2d([]string{"C2D_ENDPOINT=https://" + hub.Endpoints.HTTPS}, "hub", "status"), 10).stderr
		},
		"unauthorized: the hub does not accept the key ...": func(t *testing.T) string {
			wrong := strings.Replace(hub.Owner.String(), "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
			return want(t, c2d([]string{"C2D_CONNECTION_STRING=" + wrong}, "device", "list"), 8).stderr
		},
		"unauthorized: policy 'service' lacks RegistryRead; ...": func(t *testing.T) string {
			return want(t, c2d([]string{"C2D_CONNECTION_STRING=" + policy(t, "service")}, "device", "list"), 8).stderr
		},
		`device "x" is not registered; ...`: func(t *testing.T) string {
			return want(t, c2d(nil, "device", "show", "x"), 9).stderr
		},
		"device pump-9 has 50 messages pending (limit 50); ...": func(t *testing.T) string { return fullQueue(t).stderr },
		"message not sent: ... is not allowed ...": func(t *testing.T) string {
			return want(t, c2d(nil, "send", "pump-7", "--prop", "note=hello world"), 2).stderr
		},
	},
	"agent-reasons": {
		`nothing to do: set properties "target" and "action", or "command"`:                                      try("x-sender=me"),
		`missing property "target"`:                                                                              try("action=on"),
		`missing property "duration" for action "pulse"`:                                                         try("target=relay1;action=pulse"),
		`unknown target "relay9" (declared: act, relay1, buzzer)`:                                                try("target=relay9;action=on"),
		`unknown action "flash" (actions: on, off, toggle, blink, pulse)`:                                        try("target=act;action=flash"),
		`action "blink" not allowed on relay1 (allowed: on, off, pulse)`:                                         try("target=relay1;action=blink"),
		`duration 10m exceeds relay1's max_duration 30s`:                                                         try("target=relay1;action=pulse;duration=10m"),
		`count 51 exceeds act's max_count 50`:                                                                    try("target=act;action=blink;count=51;interval=50ms"),
		`duration 50ms is below relay1's min_interval 200ms`:                                                     try("target=relay1;action=pulse;duration=50ms"),
		`malformed property "count": "abc" is not a whole number`:                                                try("target=act;action=blink;count=abc"),
		`count 0 is below the minimum 1`:                                                                         try("target=act;action=blink;count=0"),
		`property "count" does not apply to action "toggle"`:                                                     try("target=act;action=toggle;count=2"),
		`property "interval" cannot be combined with "on" or "off"`:                                              try("target=act;action=blink;interval=100ms;on=100ms"),
		`unknown property "durration" (properties: target, action, count, interval, on, off, duration, command)`: try("target=relay1;action=pulse;durration=2s"),
		`property "target" appears more than once`:                                                               try("target=relay1;target=act;action=on"),
		`unknown command "dance" (declared: identify, reset-load)`:                                               try("command=dance"),
		"blink of 20 × (1s on + 1s off) = 40s exceeds act's max_duration 30s":                                    try("target=act;action=blink;count=20;interval=1s"),
		"on 5ms is below act's min_interval 50ms":                                                                try("target=act;action=blink;on=5ms;off=100ms"),
		`malformed property "duration": "soon" is not a duration (e.g. 250ms, 1.5s, or whole milliseconds)`:      try("target=relay1;action=pulse;duration=soon"),
		`malformed property "target": empty value`:                                                               try("target=;action=on"),
		`property "target" cannot be combined with "command"`:                                                    try("command=identify;target=act"),
	},
}

// pinnedElsewhere are marked quotes `c2d-agent try` cannot produce (they need a hub, a crash or a
// failing chip), with the test that pins each.
var pinnedElsewhere = map[string]string{
	"message expired at 2026-11-25T21:59:59Z": "agent/action TestDecodeRejected; agent puback_test (expired on arrival)",
	"malformed message: ...":                  "agent.go handleDelivery (the prefix; the cause is iothub's topic parser, fuzzed)",
	"interrupted: the agent stopped while running this message (started ...); its outputs were returned to their safe state and it is not run twice": "agent TestInterruptedMessageIsNotRunTwice",
	"cut short: the agent is stopping; relay1 returned to safe state":                                                                                "agent TestBinarySIGTERM",
	"hardware error: relay1: ...; relay1 returned to safe state":                                                                                     "agent/dispatch TestHardwareErrors (the cause); agent.go (the prefix)",
}

// try is a scenario running `c2d-agent try` with props on the example board; the reason is the
// line after "Rejected: ".
func try(props string) scenario {
	return func(t *testing.T) string {
		r := want(t, runBin("c2d-agent", env, "try", "--config", board, props), 1)
		return strings.TrimPrefix(r.stdout, "Rejected: ")
	}
}

type edit struct{ old, new string }

// configErrors runs check-config on configs/agent.yaml with each edit alone and returns the error
// lines, the file's path shown as /etc/c2d/agent.yaml.
func configErrors(t *testing.T, edits ...edit) string {
	var out []string
	for _, e := range edits {
		// The example itself, so the line numbers are the ones a reader of configs/agent.yaml sees
		// (decoding errors come before the connection string file is read).
		b, err := os.ReadFile(filepath.Join(root, "configs", "agent.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), e.old) {
			t.Fatalf("configs/agent.yaml no longer contains %q", e.old)
		}
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), e.old, e.new, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		r := want(t, runBin("c2d-agent", env, "check-config", p), 1)
		out = append(out, strings.TrimSpace(strings.ReplaceAll(strings.TrimPrefix(r.stderr, "c2d-agent: "), p, "/etc/c2d/agent.yaml")))
	}
	return strings.Join(out, "\n") + "\n"
}

// fullQueue fills pump-9 (never connected) to the hub's default limit, then sends once more.
func fullQueue(t *testing.T, args ...string) result {
	if _, done := runs.LoadOrStore("pump-9 full", true); !done {
		want(t, c2d(nil, "device", "create", "pump-9"), 0)
		for i := 0; i < 50; i++ {
			want(t, c2d(nil, "send", "pump-9", "--prop", "n=1"), 0)
		}
	}
	return want(t, c2d(nil, append([]string{"send", "pump-9", "--prop", "n=1"}, args...)...), 1)
}

func policy(t *testing.T, name string) string {
	r := runBin("c2d-hub", env, "connection-string", "--data", hub.Data, "--policy", name)
	if r.code != 0 {
		t.Fatalf("c2d-hub connection-string --policy %s: %s", name, r)
	}
	return strings.TrimSpace(r.stdout)
}

func want(t *testing.T, r result, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got %s", code, r)
	}
	return r
}

// TestDocsMatchPrograms is the golden-doc test.
func TestDocsMatchPrograms(t *testing.T) {
	seen := map[string]bool{}
	for _, doc := range docs {
		text, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		quotes, err := Parse(doc, string(text))
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range quotes {
			where := fmt.Sprintf("%s:%d", q.File, q.Line)
			if !q.Table {
				run, ok := blocks[q.Name]
				if !ok {
					t.Errorf("%s: block %q has no scenario in internal/golddoc", where, q.Name)
					continue
				}
				seen[q.Name] = true
				got := output(t, q.Name, run)
				lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
				if len(lines) != len(q.Lines) {
					t.Errorf("%s: %q quotes %d lines, the program printed %d:\n%s", where, q.Name, len(q.Lines), len(lines), got)
					continue
				}
				for i := range lines {
					if !Match(q.Lines[i], lines[i]) {
						t.Errorf("%s: %q line %d\n doc: %s\n real: %s", where, q.Name, i+1, q.Lines[i], lines[i])
					}
				}
				continue
			}
			quote := q.Lines[0]
			if by, ok := pinnedElsewhere[quote]; ok && q.Name == "agent-reasons" {
				seen[q.Name+"/"+quote] = true
				_ = by
				continue
			}
			run, ok := tables[q.Name][quote]
			if !ok {
				t.Errorf("%s: table %q quotes `%s`, which no scenario produces", where, q.Name, quote)
				continue
			}
			seen[q.Name+"/"+quote] = true
			if got := output(t, q.Name+"/"+quote, run); !Contains(got, quote) {
				t.Errorf("%s: the program no longer prints `%s`; it printed:\n%s", where, quote, got)
			}
		}
	}
	// Every scenario is used by some doc, so a quote removed from a doc is removed here too.
	for name := range blocks {
		if !seen[name] {
			t.Errorf("scenario %q: no doc marks a block golden: %s", name, name)
		}
	}
	for table, rows := range tables {
		for quote := range rows {
			if !seen[table+"/"+quote] {
				t.Errorf("table %q: no doc row quotes `%s`", table, quote)
			}
		}
	}
}

// output runs a scenario once, however many docs quote it.
func output(t *testing.T, key string, run scenario) string {
	if v, ok := runs.Load("out:" + key); ok {
		return v.(string)
	}
	var got string
	t.Run(strings.ReplaceAll(key, " ", "_"), func(t *testing.T) { got = run(t) })
	runs.Store("out:"+key, got)
	return got
}
