package shiptest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw/simhw"
	"github.com/c2d-project/c2d/internal/testproc"
)

// exampleConfig is configs/agent.yaml with its connection string file moved into dir (the
// example points at /etc/c2d/connection-string, which a build machine does not have).
func exampleConfig(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "configs", "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conn := filepath.Join(dir, "connection-string")
	if err := os.WriteFile(conn, []byte("HostName=hub.local;DeviceId=pi;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(b), "/etc/c2d/connection-string", conn)
	if cfg == string(b) {
		t.Fatal("configs/agent.yaml no longer names /etc/c2d/connection-string (the package's path)")
	}
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestARMAgentsCheckTheExampleConfig(t *testing.T) {
	dir := dist(t)
	cfg := exampleConfig(t, t.TempDir())
	for _, tg := range targets {
		out, err := run(t, tg, binary(dir, "c2d-agent", tg), "check-config", cfg)
		if err != nil {
			t.Errorf("c2d-agent_%s check-config: %v\n%s", tg.name, err, out)
			continue
		}
		for _, want := range []string{"relay1", "GPIO17", "identify"} {
			if !strings.Contains(out, want) {
				t.Errorf("c2d-agent_%s check-config output lacks %q:\n%s", tg.name, want, out)
			}
		}
	}
}

// startHub runs the amd64 hub the ARM agents connect to, plain MQTT and HTTP on loopback.
func startHub(t *testing.T, bin string) *testproc.Hub {
	t.Helper()
	return testproc.StartHub(t, bin, testproc.HubOptions{Args: []string{"--hostname", "localhost",
		"--mqtt", "127.0.0.1:0", "--mqtts", "off", "--http", "127.0.0.1:0", "--https", "off", "--amqps", "off"}})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

const armAgentConfig = `connection:
  connection_string_file: %[1]s/connection-string
  broker_url: tcp://%[2]s
  reconnect_min: 100ms
  reconnect_max: 1s
hardware:
  backend: sim
  sim:
    state_file: %[1]s/board.json
state_dir: %[1]s/state
outputs:
  relay1:
    pin: GPIO17
    active_low: true
    safe: off
    actions: [on, off, pulse]
    max_duration: 5s
`

// Each ARM agent — the binaries that go into the .deb files — runs under qemu-user, connects to an
// amd64 hub, carries out a command, completes it, and returns its output to safe on SIGTERM.
func TestARMAgentsEndToEnd(t *testing.T) {
	dir := dist(t)
	hub := startHub(t, binary(dir, "c2d-hub", targets[3]))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tg := range targets[:3] {
		t.Run(tg.name, func(t *testing.T) {
			device := "pi-" + tg.name
			dev, err := hub.Client.CreateDevice(ctx, device, "", "")
			if err != nil {
				t.Fatal(err)
			}
			work := t.TempDir()
			cs := iothub.DeviceConnectionString{HostName: "localhost", DeviceID: device, SharedAccessKey: dev.Authentication.SymmetricKey.PrimaryKey}
			if err := os.WriteFile(filepath.Join(work, "connection-string"), []byte(cs.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(work, "agent.yaml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf(armAgentConfig, work, hub.Endpoints.MQTT)), 0o644); err != nil {
				t.Fatal(err)
			}
			argv := append(append([]string{}, tg.qemu...), binary(dir, "c2d-agent", tg), "--config", cfg)
			agent := exec.Command(argv[0], argv[1:]...)
			logf, err := os.Create(filepath.Join(work, "agent.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			agent.Stdout, agent.Stderr = logf, logf
			if err := agent.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- agent.Wait() }()
			defer func() {
				if agent.ProcessState == nil {
					_ = agent.Process.Kill()
				}
			}()
			agentLog := func() string { b, _ := os.ReadFile(filepath.Join(work, "agent.log")); return string(b) }

			waitFor(t, 60*time.Second, device+" connected", func() bool {
				d, err := hub.Client.GetDevice(ctx, device)
				return err == nil && d.ConnectionState == "Connected"
			})
			res, err := hub.Client.Send(ctx, device, iothub.SendRequest{
				MessageID:  "on-" + tg.name,
				Ack:        iothub.AckFull,
				Properties: []iothub.AppProperty{{Name: "target", Value: "relay1"}, {Name: "action", Value: "on"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			st, err := hub.Client.MessageStatus(ctx, device, res.MessageID, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if st.Outcome != iothub.StatusSuccess {
				t.Fatalf("outcome %q (%s), want Success\nagent log:\n%s", st.Outcome, st.Reason, agentLog())
			}
			board, err := simhw.ReadState(filepath.Join(work, "board.json"))
			if err != nil {
				t.Fatal(err)
			}
			if o := board.Outputs["relay1"]; !o.On || o.Level != "low" {
				t.Fatalf("after Success relay1 is on=%v level=%s, want on (active-low: level low)", o.On, o.Level)
			}

			if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("agent exit on SIGTERM: %v\n%s", err, agentLog())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("agent ignored SIGTERM\n%s", agentLog())
			}
			board, err = simhw.ReadState(filepath.Join(work, "board.json"))
			if err != nil {
				t.Fatal(err)
			}
			if o := board.Outputs["relay1"]; o.On || !board.Closed {
				t.Fatalf("after SIGTERM relay1 on=%v closed=%v, want safe (off) and closed", o.On, board.Closed)
			}
		})
	}
}
