package agent

import (
	"fmt"
	"log/slog"

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
