package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/c2d-project/c2d/internal/demo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("bin", "bin", "directory holding c2d-hub, c2d-agent and c2d")
	keep := flag.Bool("keep", false, "keep the temporary directory (hub data, board state, logs)")
	cluster := flag.Bool("cluster", false, "three c2d-hub nodes on PostgreSQL, one of them killed (make demo-cluster)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt := demo.Options{BinDir: *bin, Out: os.Stdout, Keep: *keep}
	if *cluster {
		return demo.RunCluster(ctx, opt)
	}
	return demo.Run(ctx, opt)
}
