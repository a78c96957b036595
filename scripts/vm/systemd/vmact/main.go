package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/c2d-project/c2d/internal/sdnotify"
	"github.com/c2d-project/c2d/scripts/vm/vmsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "c2d-vm-act:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("name", "ACT", "LED name under /sys/class/leds")
	out := flag.String("log", "/run/c2d-vm/ACT.events", "file the brightness changes are appended to")
	flag.Parse()
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	led, err := vmsim.NewLED(*name, 255)
	if err != nil {
		return err
	}
	defer led.Close()
	_ = sdnotify.FromEnv().Ready("LED " + *name + " registered")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	w := bufio.NewWriter(f)
	for {
		select {
		case <-stop:
			return w.Flush()
		default:
		}
		ev, err := led.Next(1e9)
		if err != nil {
			continue // no change within a second: check for a stop signal and wait again
		}
		fmt.Fprintf(w, "%d %d\n", ev.At.UnixNano(), ev.Brightness)
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
