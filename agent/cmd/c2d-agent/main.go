package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/c2d-project/c2d/agent"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/internal/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errHelp) {
			fmt.Fprintln(os.Stderr, "c2d-agent:", err)
			os.Exit(1)
		}
	}
}

// errHelp ends a run that printed help: exit 0, nothing more to say.
var errHelp = errors.New("help printed")

const usage = `c2d-agent runs on the board: it receives cloud-to-device messages and turns their properties
into actions on the outputs /etc/c2d/agent.yaml declares.

Usage:
  c2d-agent [--config FILE] [--debug]           run (the systemd unit does this)
  c2d-agent check-config [--hardware] [--connect] FILE
                                                validate FILE and print what the agent would run with;
                                                --hardware also opens every output (safe state),
                                                --connect also connects to the hub once
  c2d-agent try [--config FILE] [--hardware] 'target=relay1;action=pulse;duration=2s'
                                                what the agent would do with these message properties,
                                                or the reject reason; --hardware performs it
  c2d-agent --version

check-config --hardware/--connect and try --hardware refuse while the agent runs.
Docs: /usr/share/doc/c2d-agent/agent.md, man c2d-agent.

Flags:
`

// parse parses args with fs allowing flags after positional arguments (`check-config FILE
// --hardware`), and turns -h/--help into help on stdout (exit 0) and any other flag error into one
// error naming the fix.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, errHelp
		}
		if err != nil {
			return nil, fmt.Errorf("%v; see `c2d-agent --help`", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "try":
			return try(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("c2d-agent", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "board config `file`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.BoolVar(showVersion, "v", false, "print the version and exit (short for --version)")
	debug := fs.Bool("debug", false, "log at debug level")
	pos, err := parse(fs, args, stdout)
	if err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("c2d-agent"))
		return nil
	}
	if len(pos) > 0 {
		return fmt.Errorf("unexpected argument %q (commands: check-config, try); see `c2d-agent --help`", pos[0])
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log.Info("starting", "version", version.String("c2d-agent"), "config", *path)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.Run(ctx, cfg, agent.Options{Logger: log})
}

func checkConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("c2d-agent check-config", flag.ContinueOnError)
	var opt agent.CheckOptions
	fs.BoolVar(&opt.Hardware, "hardware", false, "also open the hardware (drives every output to its safe state)")
	fs.BoolVar(&opt.Connect, "connect", false, "also connect to the hub once with the config's credentials and TLS settings")
	pos, err := parse(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("check-config takes the config file: c2d-agent check-config [--hardware] [--connect] /etc/c2d/agent.yaml")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.CheckConfig(ctx, stdout, pos[0], opt, slog.New(slog.NewTextHandler(stderr, nil)))
}

func try(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("c2d-agent try", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "board config `file`")
	hardware := fs.Bool("hardware", false, "perform the action on the outputs (refused while the agent runs)")
	pos, err := parse(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return errors.New("try takes message properties: c2d-agent try 'target=relay1;action=pulse;duration=2s'")
	}
	props, err := agent.ParseTryProperties(strings.Join(pos, " "))
	if err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.Try(ctx, stdout, cfg, props, *hardware, slog.New(slog.NewTextHandler(stderr, nil)))
}
