package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestDemo runs `make demo`'s program against freshly built binaries: if this passes, the README's
// first command works.
func TestDemo(t *testing.T) {
	bin := t.TempDir()
	root, _ := filepath.Abs("../..")
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cloud/cmd/c2d-hub", "./agent/cmd/c2d-agent", "./service-cli/cmd/c2d")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, Options{BinDir: bin, Out: &out})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Success", "Rejected", `unknown target "relay9"`, "relay1 ●", "exited cleanly", "demo finished",
		"demo-pi (connected)", "Outcome:  done", "blink act 2×", "Reported ($version", "agent.backend = \"sim\"",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// c2d state shows the simulated door contact the demo closed.
	if !regexp.MustCompile(`(?m)^\s+door\s+on\s`).MatchString(out.String()) {
		t.Errorf("c2d state does not show the door on")
	}
}

// TestDemoCluster runs `make demo-cluster`'s program: three nodes on PostgreSQL, a direct method
// through a node that does not hold the board answered by the board, the board's node killed with
// -9, the board carrying on through another node.
func TestDemoCluster(t *testing.T) {
	pgtest.Need(t)
	bin := t.TempDir()
	root, _ := filepath.Abs("../..")
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cloud/cmd/c2d-hub", "./agent/cmd/c2d-agent", "./service-cli/cmd/c2d")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := RunCluster(ctx, Options{BinDir: bin, Out: &out})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Node n2:", "n1 passes it to n2", "Status: 200", `"id": "demo-2"`, "the agent moved to node n3", "completed message demo-3", "completed message demo-4",
		`unknown target "relay9"`, "demo finished",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
