package broker

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// An idle connected device must not keep the stack of the packet path: the hub holds thousands
// of them for months. Each connection has two goroutines that live as long as it (mochi's reader
// and writer); mochi's CONNECT and SUBSCRIBE handling needs more than 16 KiB of stack, and Go
// keeps a grown stack until a GC halves it, so handled on the reader it would leave each idle
// device at ≥ 32 KiB of stack (internal/mochi/NOTE.md). The figure is the stack memory the
// process gained per device (the test's devices run no goroutines), with the GC off. It is
// measured in a process of its own: stacks that earlier tests freed stay in the runtime's stack
// cache, counted in StackInuse, and would be reused unseen.
func TestIdleDeviceConnectionKeepsASmallStack(t *testing.T) {
	if os.Getenv("C2D_STACK_PROBE") == "" {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestIdleDeviceConnectionKeepsASmallStack$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "C2D_STACK_PROBE=1")
		out, err := cmd.CombinedOutput()
		if m := regexp.MustCompile(`stack per idle connected device: .*`).Find(out); m != nil {
			t.Log(string(m))
		}
		if err != nil {
			t.Fatalf("the measuring process: %v\n%s", err, out)
		}
		return
	}
	const devices = 200
	b, h := startPinBroker(t, Options{})
	warm := dialRaw(t, b, h, "warm-up") // the packet workers and the store's pools exist already
	warm.subscribe(1, iothub.DeviceBoundFilter("warm-up"))
	warm.ping()

	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // a GC would halve what the goroutines grew to
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range devices {
		id := fmt.Sprintf("idle-%03d", i)
		r := dialRaw(t, b, h, id)
		r.subscribe(1, iothub.DeviceBoundFilter(id))
		r.ping() // the SUBSCRIBE and its hooks are done
	}
	runtime.ReadMemStats(&after)
	per := float64(int64(after.StackInuse)-int64(before.StackInuse)) / devices / 1024
	t.Logf("stack per idle connected device: %.1f KiB (%d devices)", per, devices)
	if per > 16 {
		t.Fatalf("each idle connected device holds %.1f KiB of stack, want ≤ 16 (two goroutines at their starting size)", per)
	}
}
