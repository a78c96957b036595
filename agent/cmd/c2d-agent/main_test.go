package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"--version"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "c2d-agent dev (commit ") {
		t.Errorf("--version printed %q", out.String())
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	conn := filepath.Join(dir, "device.conn")
	if err := os.WriteFile(conn, []byte("HostName=hub.local;DeviceId=pi-1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../../../configs/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	derived := strings.Replace(string(example), "connection_string_file: /etc/c2d/connection-string", "connection_string_file: "+conn, 1)
	if err := os.WriteFile(cfg, []byte(derived), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run([]string{"check-config", cfg}, &out, &errb); err != nil {
		t.Fatalf("check-config: %v\n%s", err, errb.String())
	}
	for _, want := range []string{
		"device:        pi-1 (hub hub.local)",
		"broker:        ssl://hub.local:8883",
		"relay1       (gpio GPIO17), active-low, safe off; actions on,off,pulse; max_duration 30s",
		"identify     blink act 10× (200ms on, 200ms off); pulse buzzer for 150ms (complete on finish)",
		"config OK",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out.String())
		}
	}

	// With --hardware on the sim backend, the outputs are opened (safe state) and closed.
	sim := strings.Replace(derived, "backend: periph", "backend: sim\n  sim:\n    state_file: "+filepath.Join(dir, "outputs.json"), 1)
	if err := os.WriteFile(cfg, []byte(sim), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run([]string{"check-config", "--hardware", cfg}, &out, &errb); err != nil {
		t.Fatalf("check-config --hardware: %v", err)
	}
	if !strings.Contains(out.String(), "hardware: every output opened and left in its safe state") {
		t.Errorf("output:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "outputs.json")); err != nil {
		t.Errorf("sim state file not written: %v", err)
	}

	// The example's door contact, uncommented: listed, and read with --hardware.
	door := strings.Replace(sim, "state_file: "+filepath.Join(dir, "outputs.json"),
		"state_file: "+filepath.Join(dir, "outputs.json")+"\n    inputs_file: "+filepath.Join(dir, "inputs.json"), 1)
	door = strings.Replace(door, "# inputs:\n#   door:\n#     pin: GPIO22\n#     pull: up             # up, down or none\n#     active_low: true\n",
		"inputs:\n  door:\n    pin: GPIO22\n    pull: up\n    active_low: true\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "inputs.json"), []byte(`{"door": "on"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(door), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run([]string{"check-config", "--hardware", cfg}, &out, &errb); err != nil {
		t.Fatalf("check-config --hardware with the door: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"door         (input GPIO22), active-low, pull up; edge both; debounce 20ms", "input door: on", "every input read"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out.String())
		}
	}

	// A bad config names the file and the field.
	if err := os.WriteFile(cfg, []byte(strings.Replace(derived, "max_count: 50", "max_count: lots", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	err = run([]string{"check-config", cfg}, &out, &errb)
	if err == nil || !strings.HasPrefix(err.Error(), "load "+cfg+": outputs.act.max_count: \"lots\" is not a whole number (line ") {
		t.Errorf("bad config error: %v", err)
	}
	if err := run([]string{"--config", cfg}, &out, &errb); err == nil || !strings.Contains(err.Error(), "outputs.act.max_count") {
		t.Errorf("run with a bad config: %v", err)
	}
	if err := run([]string{"check-config"}, &out, &errb); err == nil {
		t.Error("check-config without a file succeeded")
	}
}
