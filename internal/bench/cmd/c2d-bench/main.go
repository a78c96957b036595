package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/c2d-project/c2d/internal/bench"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "c2d-bench:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if len(args) > 0 && args[0] == "raw-broker" {
		fs := flag.NewFlagSet("raw-broker", flag.ContinueOnError)
		addr := fs.String("addr", "127.0.0.1:0", "listen address")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		_, _ = bench.RaiseFileLimit()
		return bench.ServeRawBroker(ctx, *addr, func(a string) { fmt.Fprintln(stdout, "listening", a) })
	}
	if len(args) > 0 && args[0] == "check" {
		return check(args[1:], stdout, stderr)
	}
	cfg := bench.Defaults()
	fs := flag.NewFlagSet("c2d-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonPath := fs.String("json", "bench.json", "write the report as JSON to `file`")
	fs.StringVar(&cfg.HubBin, "hub-bin", "", "c2d-hub binary (default: bin/c2d-hub, else built with go build)")
	fs.StringVar(&cfg.AgentBin, "agent-bin", "", "c2d-agent binary (default: bin/c2d-agent, else built)")
	fs.StringVar(&cfg.WorkDir, "dir", "", "work directory for data dirs and logs (default: a new temp dir; its disk is the one measured)")
	fs.StringVar(&cfg.DistDir, "dist", "", "directory of cross-built agents (c2d-agent_linux_*, from scripts/cross-build.sh); default dist/")
	keep := fs.Bool("keep", false, "keep the work directory (logs) afterwards")
	sections := fs.String("sections", strings.Join(cfg.Sections, ","), "sections to run: fsync,latency,methods,throughput,cluster,fleet,agent")
	fs.IntVar(&cfg.LatencyCommands, "commands", cfg.LatencyCommands, "commands per latency row")
	fs.BoolVar(&cfg.SimBoardOnDisk, "sim-board-on-disk", false, "keep the agent's sim board files (state file, transition log) on the data disk instead of /dev/shm")
	fs.IntVar(&cfg.ManyDevices, "many-devices", cfg.ManyDevices, "devices in the many-devices latency row")
	fs.IntVar(&cfg.ManyWorkers, "many-parallel", cfg.ManyWorkers, "commands outstanding at once in the many-devices row")
	fs.IntVar(&cfg.RawRoundTrips, "round-trips", cfg.RawRoundTrips, "round trips per raw MQTT latency baseline")
	fs.IntVar(&cfg.FsyncSamples, "fsync-samples", cfg.FsyncSamples, "fsync samples")
	fs.IntVar(&cfg.ThroughputMessages, "messages", cfg.ThroughputMessages, "messages per c2d throughput row")
	fs.IntVar(&cfg.ClusterMessages, "cluster-messages", cfg.ClusterMessages, "messages per cluster row")
	fs.IntVar(&cfg.RawThroughputMessages, "raw-messages", cfg.RawThroughputMessages, "messages per raw throughput row")
	fs.IntVar(&cfg.ThroughputSenders, "senders", cfg.ThroughputSenders, "concurrent senders (HTTP clients / MQTT publishers)")
	tpDevices := fs.String("devices", "1,100,1000", "device counts for the throughput rows")
	fleet := fs.String("fleet", "1000,10000", "fleet sizes (idle connected devices)")
	fs.DurationVar(&cfg.FleetIdle, "fleet-idle", 0, "also measure the largest fleet after it stayed idle this long (e.g. 3m; 0: off)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-parallel", cfg.ConnectConcurrency, "concurrent connects")
	fs.DurationVar(&cfg.IdleWindow, "idle-window", cfg.IdleWindow, "window over which the idle agent's CPU is measured")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of c2d-bench itself (its senders and devices, not the hub) to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		// The bench's clients share the machine with the hub: what they cost is CPU the hub
		// does not get, so it is worth seeing.
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var err error
	cfg.Sections = strings.Split(*sections, ",")
	if cfg.ThroughputDevices, err = ints(*tpDevices); err != nil {
		return fmt.Errorf("--devices: %w", err)
	}
	if cfg.FleetSizes, err = ints(*fleet); err != nil {
		return fmt.Errorf("--fleet: %w", err)
	}
	if cfg.Self, err = os.Executable(); err != nil {
		return err
	}
	if cfg.WorkDir == "" {
		if cfg.WorkDir, err = os.MkdirTemp("", "c2d-bench-*"); err != nil {
			return err
		}
		if !*keep {
			defer os.RemoveAll(cfg.WorkDir)
		}
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return err
	}
	if err := binaries(ctx, &cfg, stderr); err != nil {
		return err
	}
	cfg.Log = stderr
	fmt.Fprintf(stderr, "c2d-bench: work dir %s, hub %s, agent %s\n", cfg.WorkDir, cfg.HubBin, cfg.AgentBin)
	t0 := time.Now()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		rep.PrintTable(stdout)
		if werr := rep.WriteJSON(*jsonPath); werr != nil {
			return werr
		}
		fmt.Fprintf(stderr, "c2d-bench: wrote %s in %s\n", *jsonPath, time.Since(t0).Round(time.Second))
	}
	return err
}

// binaries finds bin/c2d-hub and bin/c2d-agent, or builds them into the work dir.
func binaries(ctx context.Context, cfg *bench.Config, stderr io.Writer) error {
	if cfg.HubBin != "" && cfg.AgentBin != "" {
		return nil
	}
	root, err := bench.ModuleRoot()
	if err == nil && cfg.HubBin == "" && cfg.AgentBin == "" {
		h, a := filepath.Join(root, "bin", "c2d-hub"), filepath.Join(root, "bin", "c2d-agent")
		if fileExists(h) && fileExists(a) {
			cfg.HubBin, cfg.AgentBin = h, a
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("no --hub-bin/--agent-bin and cannot build: %w", err)
	}
	fmt.Fprintln(stderr, "c2d-bench: building c2d-hub and c2d-agent")
	h, a, err := bench.BuildBinaries(ctx, root, cfg.WorkDir)
	if err != nil {
		return err
	}
	if cfg.HubBin == "" {
		cfg.HubBin = h
	}
	if cfg.AgentBin == "" {
		cfg.AgentBin = a
	}
	return nil
}

// check is make bench-check: the report's figures against issue #14's targets (-valid: only
// that the report is complete for the sections it names, the smoke test's check).
func check(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("json", "bin/bench.json", "the report c2d-bench wrote")
	valid := fs.String("valid", "", "only check that the report is complete for these `sections` (comma-separated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep, err := bench.ReadReport(*path)
	if err != nil {
		return err
	}
	if *valid != "" {
		if err := rep.Validate(strings.Split(*valid, ",")); err != nil {
			return fmt.Errorf("%s is not a complete report: %w", *path, err)
		}
		fmt.Fprintf(stdout, "%s: a complete report (%s)\n", *path, *valid)
		return nil
	}
	fmt.Fprintf(stdout, "bench-check %s (run of %s UTC)\n", *path, rep.Started.UTC().Format("2006-01-02 15:04"))
	if err := bench.CheckReport(stdout, rep, bench.Targets); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	fmt.Fprintln(stdout, "bench-check: every target met")
	return nil
}

func fileExists(p string) bool { st, err := os.Stat(p); return err == nil && st.Mode().IsRegular() }

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(f), "%d", &n); err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}
