package golddoc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/testproc"
)

// The documents checked, relative to the repository root. README.md's "Put it on a Pi" section is
// enforced by the VM test (scripts/vm), so it carries no markers.
var docs = []string{"README.md", "docs/cli.md", "docs/agent.md"}

var (
	root   = filepath.Join("..", "..")
	binDir string
	hub    *testproc.Hub
	agent  *exec.Cmd
	env    []string // c2d's environment: the test hub with the owner policy over plain HTTP
	board  string   // the agent's config: configs/agent.yaml on simulated hardware
	runs   sync.Map // scenario name → output, each scenario runs once
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	var err error
	if binDir, err = os.MkdirTemp("", "c2d-golddoc-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if err := testproc.Build(binDir, nil, "../../service-cli/cmd/c2d", "../../cloud/cmd/c2d-hub", "../../agent/cmd/c2d-agent"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hub, err = testproc.RunHub(context.Background(), filepath.Join(binDir, "c2d-hub"), testproc.HubOptions{
		Data: filepath.Join(binDir, "hub"), Args: []string{"--hostname", "hub.local", "--mqtt", "127.0.0.1:0",
			"--mqtts", "off", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer hub.Stop()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "C2D_") {
			env = append(env, kv)
		}
	}
	env = append(env, "C2D_CONNECTION_STRING="+hub.Owner.String(), "C2D_ENDPOINT=http://"+hub.Endpoints.HTTP)
	if err := startAgent(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = agent.Process.Kill(); _ = agent.Wait() }()
	return m.Run()
}

// startAgent provisions pump-7 and runs c2d-agent for it with configs/agent.yaml on the sim
// backend, until `c2d device show` says Connected.
func startAgent() error {
	if r := c2d(nil, "device", "create", "pump-7"); r.code != 0 {
		return fmt.Errorf("device create: %s", r)
	}
	cs := c2d(nil, "device", "connection-string", "pump-7")
	dir := filepath.Join(binDir, "board")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	conn := filepath.Join(dir, "connection-string")
	if err := os.WriteFile(conn, []byte(cs.stdout), 0o600); err != nil {
		return err
	}
	var err error
	board, err = boardConfig(dir, conn, "tcp://"+hub.Endpoints.MQTT)
	if err != nil {
		return err
	}
	agent = exec.Command(filepath.Join(binDir, "c2d-agent"), "--config", board)
	agent.Stdout, agent.Stderr = &testproc.SyncBuffer{}, &testproc.SyncBuffer{}
	if err := agent.Start(); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r := c2d(nil, "device", "show", "pump-7"); strings.Contains(r.stdout, "Connected since") {
			return nil
		}
	}
	return fmt.Errorf("the agent never connected:\n%s", agent.Stderr)
}

// boardConfig writes configs/agent.yaml with the simulated backend, a state dir in dir and the
// given connection string file and broker; it returns the file's path.
func boardConfig(dir, conn, broker string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "configs", "agent.yaml"))
	if err != nil {
		return "", err
	}
	s := strings.Replace(string(b), "connection_string_file: /etc/c2d/connection-string",
		"connection_string_file: "+conn+"\n  broker_url: "+broker, 1)
	s = strings.Replace(s, "backend: periph", "backend: sim\n  sim:\n    state_file: "+filepath.Join(dir, "outputs.json"), 1)
	s += "\nstate_dir: " + filepath.Join(dir, "state") + "\n"
	p := filepath.Join(dir, "agent.yaml")
	return p, os.WriteFile(p, []byte(s), 0o600)
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func runBin(bin string, environ []string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	cmd.Env = environ
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return result{out.String(), errb.String(), code}
}

// c2d runs the CLI against the test hub; extra entries override env.
func c2d(extra []string, args ...string) result {
	return runBin("c2d", append(append([]string(nil), env...), extra...), args...)
}
