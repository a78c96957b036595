package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/agent/conn"
	"github.com/c2d-project/c2d/internal/version"
)

// CheckOptions are check-config's optional checks beyond the file itself.
type CheckOptions struct {
	// Hardware opens every output (which drives it to its safe state) and closes it again:
	// refused while the agent runs, whose outputs those are.
	Hardware bool
	// Connect makes one MQTT connection with the config's credentials and TLS settings and says
	// exactly what is wrong if it fails: refused while the agent runs (it would take over the
	// agent's session).
	Connect bool
}

// CheckConfig is `c2d-agent check-config`: load and validate path, resolve the connection string
// (file) and CA, print what the agent would run with, then the optional checks.
func CheckConfig(ctx context.Context, w io.Writer, path string, opt CheckOptions, log *slog.Logger) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	res, err := cfg.Resolve()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	Describe(w, cfg, res)
	if opt.Hardware || opt.Connect {
		unlock, err := lockForHardware(res.StateDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	if opt.Hardware {
		board, err := OpenBoard(cfg, log)
		if err != nil {
			return fmt.Errorf("open hardware (%s): %w", cfg.Hardware.Backend, err)
		}
		inputs, err := OpenInputs(cfg, log, board)
		if err != nil {
			_ = board.Close()
			return fmt.Errorf("open hardware (%s): %w", cfg.Hardware.Backend, err)
		}
		for _, n := range inputs.Names() {
			on, _ := inputs.Input(n).State()
			fmt.Fprintf(w, "input %s: %s\n", n, onOff(on))
		}
		_ = inputs.Close()
		if err := board.Close(); err != nil {
			return fmt.Errorf("close hardware: %w", err)
		}
		fmt.Fprintln(w, "hardware: every output opened and left in its safe state; every input read")
	} else {
		fmt.Fprintln(w, "hardware: not opened (pins and LEDs are resolved with --hardware, which drives every output to its safe state)")
	}
	if opt.Connect {
		c, err := conn.New(conn.Options{
			Device: res.Device, BrokerURL: res.BrokerURL, TLS: res.TLS, Extension: res.Extension,
			ClientType: "c2d-agent/" + version.Version, KeepAlive: cfg.Connection.KeepAlive.Duration,
			TokenTTL: cfg.Connection.TokenTTL.Duration, ConnectTimeout: cfg.Connection.ConnectTimeout.Duration,
			ReconnectMin: time.Second, ReconnectMax: time.Second, Logger: log, Deliver: func(d *conn.Delivery) {},
		})
		if err != nil {
			return err
		}
		if err := c.Probe(ctx); err != nil {
			msg := fmt.Sprintf("connect to %s as %s: %v", c.Broker(), res.Device.DeviceID, err)
			if hint := c.Hint(err); hint != "" {
				msg += "; likely: " + hint
			}
			return fmt.Errorf("%s", msg)
		}
		what := "credentials OK"
		if res.TLS != nil {
			what = "TLS and credentials OK"
		}
		fmt.Fprintf(w, "connection: %s accepted device %s (%s)\n", c.Broker(), res.Device.DeviceID, what)
	}
	fmt.Fprintln(w, "config OK")
	return nil
}
