package agent

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/c2d-project/c2d/agent/config"
)

// CheckConfig is `c2d-agent check-config`: load and validate path, resolve the connection string
// (file) and CA, print what the agent would run with, and with hardware also open every output
// (which drives it to its safe state) and close it again.
func CheckConfig(w io.Writer, path string, hardware bool, log *slog.Logger) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	res, err := cfg.Resolve()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	Describe(w, cfg, res)
	if hardware {
		board, err := OpenBoard(cfg, log)
		if err != nil {
			return fmt.Errorf("open hardware (%s): %w", cfg.Hardware.Backend, err)
		}
		if err := board.Close(); err != nil {
			return fmt.Errorf("close hardware: %w", err)
		}
		fmt.Fprintln(w, "hardware: every output opened and left in its safe state")
	}
	fmt.Fprintln(w, "config OK")
	return nil
}
