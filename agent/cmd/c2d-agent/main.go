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
	"syscall"

	"github.com/c2d-project/c2d/agent"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/internal/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "c2d-agent:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("c2d-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "board config `file`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("c2d-agent"))
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (did you mean check-config?)", fs.Arg(0))
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
	fs.SetOutput(stderr)
	hardware := fs.Bool("hardware", false, "also open the hardware (drives every output to its safe state)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: c2d-agent check-config [--hardware] FILE")
	}
	return agent.CheckConfig(stdout, fs.Arg(0), *hardware, slog.New(slog.NewTextHandler(stderr, nil)))
}
