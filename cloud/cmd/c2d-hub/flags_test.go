package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/server"
)

// `c2d-hub serve` with zero flags resolves to a complete, valid configuration: the documented
// default listeners, Azure's queue settings, a data directory from the environment and the
// machine's host name. (The ports themselves may be busy on a test machine: TestServeEndToEnd runs
// the binary without --data but on free ports.)
func TestServeWithZeroFlagsResolvesTheDefaults(t *testing.T) {
	home := t.TempDir()
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		wantData string
	}{
		{"systemd", map[string]string{"STATE_DIRECTORY": "/var/lib/c2d-hub", "XDG_STATE_HOME": "/xdg", "HOME": home}, "/var/lib/c2d-hub"},
		{"xdg", map[string]string{"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/xdg", "HOME": home}, "/xdg/c2d-hub"},
		{"home", map[string]string{"STATE_DIRECTORY": "", "XDG_STATE_HOME": "", "HOME": home}, filepath.Join(home, ".local", "state", "c2d-hub")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			t.Setenv("C2D_HUB_STORE", "")
			var got *server.Config
			cmd := serveCommand(func(_ context.Context, cfg server.Config) error {
				got = &cfg
				return nil
			})
			cmd.SetArgs([]string{})
			if err := cmd.Execute(); err != nil {
				t.Fatalf("serve with zero flags: %v", err)
			}
			if got == nil {
				t.Fatal("serve with zero flags did not run the hub")
			}
			want := server.Default()
			want.DataDir, want.HostName, want.NodeID = tc.wantData, strings.ToLower(host), host
			if *got != want {
				t.Fatalf("zero-flag configuration\n got %+v\nwant %+v", *got, want)
			}
			if got.Listen.MQTT != "127.0.0.1:1883" || got.Listen.MQTTS != "0.0.0.0:8883" || got.Listen.HTTP != "127.0.0.1:8080" ||
				got.Listen.HTTPS != "0.0.0.0:8443" || got.Listen.WS != server.Off || got.Listen.WSS != server.Off ||
				got.Listen.AMQPS != "0.0.0.0:5671" || got.Listen.AMQP != server.Off {
				t.Errorf("listeners %+v differ from docs/api.md's defaults", got.Listen)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("zero-flag configuration does not validate: %v", err)
			}
		})
	}
}

// Flags given explicitly win, and only they do: an unset flag never overrides the config file.
func TestServeFlagsOverrideOnlyWhatIsSet(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	cfgFile := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(cfgFile, []byte("listen:\n  mqtt: 127.0.0.1:11883\n  http: \"off\"\nqueue:\n  max_queue_depth: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got server.Config
	cmd := serveCommand(func(_ context.Context, cfg server.Config) error { got = cfg; return nil })
	cmd.SetArgs([]string{"--config", cfgFile, "--https", "127.0.0.1:0", "--hostname", "Hub.Example"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Listen.MQTT != "127.0.0.1:11883" || got.Listen.HTTP != server.Off || got.Listen.HTTPS != "127.0.0.1:0" ||
		got.Listen.MQTTS != server.DefaultMQTTSAddr || got.Queue.MaxQueueDepth != 7 || got.HostName != "Hub.Example" {
		t.Fatalf("resolved %+v", got)
	}
}

// --debug-listen is refused on anything but loopback, before the hub starts.
func TestServeRefusesDebugListenOffLoopback(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	ran := false
	cmd := serveCommand(func(context.Context, server.Config) error { ran = true; return nil })
	cmd.SetArgs([]string{"--debug-listen", "0.0.0.0:6060"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	if err == nil || ran || !strings.Contains(err.Error(), "listen.debug") || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("serve --debug-listen 0.0.0.0:6060: ran=%v err=%v, want a refusal naming loopback", ran, err)
	}
	var got server.Config
	cmd = serveCommand(func(_ context.Context, cfg server.Config) error { got = cfg; return nil })
	cmd.SetArgs([]string{"--debug-listen", "127.0.0.1:6060"})
	if err := cmd.Execute(); err != nil || got.Listen.Debug != "127.0.0.1:6060" {
		t.Fatalf("serve --debug-listen 127.0.0.1:6060: %v, listen.debug %q", err, got.Listen.Debug)
	}
}
