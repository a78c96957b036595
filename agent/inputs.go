package agent

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/periphhw"
	"github.com/c2d-project/c2d/hw/simhw"
)

// OpenInputs opens the config's inputs on its hardware backend, beside board (whose output lines
// an input may not take). An input's failure names it by its config path:
// `inputs.door.pin: no line "GPIO99" (...)`.
func OpenInputs(cfg *config.Config, log *slog.Logger, board hw.Board) (hw.Inputs, error) {
	specs := cfg.InputSpecs()
	var in hw.Inputs
	var err error
	switch cfg.Hardware.Backend {
	case config.BackendSim:
		in, err = simhw.OpenInputs(specs, simhw.InputOptions{File: cfg.Hardware.Sim.InputsFile, Logger: log})
	default:
		var taken []periphhw.Resolution
		if r, ok := board.(interface{ Resolutions() []periphhw.Resolution }); ok {
			taken = r.Resolutions()
		}
		in, err = periphhw.OpenInputs(specs, periphhw.InputOptions{Taken: taken, Logger: log})
	}
	if ie, ok := err.(*hw.InputError); ok {
		err = fmt.Errorf("inputs.%w", ie)
	}
	return in, err
}

// changeLog keeps a chattering input (a loose wire, a contact bouncing for longer than its
// debounce) from flooding the journal: at most changeLogBurst lines per input per
// changeLogWindow; the first change after the window says how many went unlogged. The twin and the state
// method still see every change.
type changeLog struct {
	mu  sync.Mutex
	per map[string]*changeWindow
}

type changeWindow struct {
	start      time.Time
	logged     int
	suppressed int
}

const (
	changeLogBurst  = 10
	changeLogWindow = 10 * time.Second
)

// note returns whether to log this change, and how many changes of the input went unlogged in
// the window that just ended (0 if none).
func (c *changeLog) note(input string, now time.Time) (logIt bool, suppressed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per == nil {
		c.per = map[string]*changeWindow{}
	}
	w := c.per[input]
	if w == nil || now.Sub(w.start) >= changeLogWindow {
		if w != nil {
			suppressed = w.suppressed
		}
		w = &changeWindow{start: now}
		c.per[input] = w
	}
	if w.logged < changeLogBurst {
		w.logged++
		return true, suppressed
	}
	w.suppressed++
	return false, suppressed
}

// inputChanged is the Notify callback: log (bounded) and ask the reporter for a patch.
func (a *agent) inputChanged(e hw.InputEvent) {
	logIt, suppressed := a.changes.note(e.Input, e.At)
	if suppressed > 0 {
		a.log.Warn("input changed more often than logged", "input", e.Input, "unlogged_changes", suppressed, "window", changeLogWindow.String())
	}
	if logIt {
		a.log.Info("input changed", "input", e.Input, "state", onOff(e.On))
	}
	a.reporter.changed()
}
