package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/bench"
)

// TestMain lets the test binary stand in for c2d-bench: the bench starts its raw broker baseline
// as `c2d-bench raw-broker` from its own executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "raw-broker" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestBenchSmoke runs the bench's sections at tiny sizes and checks that it writes a
// complete bench.json that bench-check can read. It is part of make test so the bench cannot rot;
// it asserts nothing about speed (that is make bench-check on a full run).
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a hub, an agent and brokers")
	}
	dir := t.TempDir()
	root, err := bench.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hub, agent, err := bench.BuildBinaries(ctx, root, filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bench.json")
	var stdout, stderr bytes.Buffer
	// The sections bench-check reads; sections with their own fixed sizes (a cluster on
	// PostgreSQL) have their own tests and would take the smoke past its 30 s budget.
	const sections = "fsync,latency,throughput,fleet,agent"
	args := []string{"-hub-bin", hub, "-agent-bin", agent, "-dir", filepath.Join(dir, "work"), "-json", out, "-sections", sections,
		"-commands", "10", "-many-devices", "3", "-many-parallel", "2", "-round-trips", "20", "-fsync-samples", "10",
		"-messages", "50", "-raw-messages", "100", "-senders", "4", "-devices", "1,3", "-fleet", "10",
		"-connect-parallel", "4", "-idle-window", "500ms", "-cpuprofile", filepath.Join(dir, "bench.pprof")}
	if err := run(args, &stdout, &stderr); err != nil {
		t.Fatalf("c2d-bench: %v\n%s", err, &stderr)
	}
	if !strings.Contains(stdout.String(), "RATIOS") {
		t.Fatalf("no table printed:\n%s", &stdout)
	}
	// -cpuprofile wrote a profile of the run: pprof's format is gzip-compressed.
	if p, err := os.ReadFile(filepath.Join(dir, "bench.pprof")); err != nil || len(p) < 2 || p[0] != 0x1f || p[1] != 0x8b {
		t.Errorf("-cpuprofile: no gzip'd profile written (%d bytes, err %v)", len(p), err)
	}
	stdout.Reset()
	if err := run([]string{"check", "-json", out, "-valid", sections}, &stdout, &stderr); err != nil {
		t.Fatalf("check -valid: %v\n%s", err, &stderr)
	}
	// The targets themselves are checked (and may be missed at these sizes): the check must name
	// every figure either way.
	stdout.Reset()
	err = run([]string{"check", "-json", out}, &stdout, &stderr)
	for _, tg := range bench.Targets {
		if !strings.Contains(stdout.String(), "("+tg.Key+")") {
			t.Errorf("check output does not report %s (err %v):\n%s", tg.Key, err, &stdout)
		}
	}
}
