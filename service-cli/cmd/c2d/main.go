package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mattn/go-isatty"

	"github.com/c2d-project/c2d/service-cli/cli"
)

func main() {
	os.Exit(run())
}

// run executes c2d and returns its exit code; SIGINT/SIGTERM cancel the running command (a --wait
// or --follow ends cleanly).
func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills c2d at once
	}()
	fd := os.Stderr.Fd()
	return cli.Main(ctx, os.Args[1:], cli.Env{
		Stdin:            os.Stdin,
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		Getenv:           os.Getenv,
		StderrIsTerminal: isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd),
	})
}
