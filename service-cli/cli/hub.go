package cli

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// hubStatusOutput is `hub status -o json`: where c2d talked to, the health check, and the hub's
// statistics (Azure's connectedDeviceCount plus c2d's counters).
type hubStatusOutput struct {
	Endpoint  string `json:"endpoint"`
	HostName  string `json:"hostName"`
	Reachable bool   `json:"reachable"`
	Healthy   bool   `json:"healthy"`
	iothub.HubStatus
}

func (a *app) hubCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "hub",
		Short: "Check the hub",
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Is the hub reachable and healthy; its version, connected devices and queue totals",
		Long: `Check that the hub answers and is healthy, and show its version, how many devices are registered,
enabled and connected, how many messages are queued and how much feedback is waiting.

Exits 0 when the hub is reachable and healthy, 10 (Unreachable) when it cannot be reached, 1 when it
answers but reports itself unhealthy. Needs a policy with ServiceConnect or RegistryRead.`,
		Example: `  c2d hub status
  c2d hub status -o json | jq .connectedDeviceCount`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.about("", "", needRegistryRead)
			a.subj.policies = "policies 'service', 'registryRead', 'registryReadWrite' or 'iothubowner'"
			a.subj.needs = "ServiceConnect or RegistryRead"
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			h, herr := c.Health(ctx)
			var he *iothub.Error
			if herr != nil && !errors.As(herr, &he) {
				// Not reachable at all: scripts still get the documented object on stdout.
				if a.json() {
					ce := classify(herr, a.subj)
					_ = writeJSON(cmd.OutOrStdout(), struct {
						Endpoint  string `json:"endpoint"`
						HostName  string `json:"hostName"`
						Reachable bool   `json:"reachable"`
						Healthy   bool   `json:"healthy"`
						Error     string `json:"error"`
					}{a.subj.endpoint, a.cs.HostName, false, false, ce.msg})
				}
				return herr
			}
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			out := hubStatusOutput{Endpoint: a.subj.endpoint, HostName: a.cs.HostName, Reachable: true,
				Healthy: herr == nil && h.Status == "ok", HubStatus: st}
			if out.Version == "" {
				out.Version = h.Version
			}
			if a.json() {
				err = writeJSON(cmd.OutOrStdout(), out)
			} else {
				health := "ok"
				if !out.Healthy {
					health = "UNHEALTHY"
					if herr != nil {
						health += ": " + herr.Error()
					}
				}
				ext := "off"
				if st.ExtensionDispositions {
					ext = "on (devices may reject with a reason)"
				}
				kv := []string{
					"Hub", a.cs.HostName,
					"Endpoint", a.subj.endpoint,
					"Health", health,
					"Version", out.Version,
					"Devices", fmt.Sprintf("%d registered, %d enabled, %d connected", st.TotalDeviceCount, st.EnabledDeviceCount, st.ConnectedDeviceCount),
					"Queued messages", strconv.Itoa(st.QueuedMessageCount),
					"Pending feedback", strconv.Itoa(st.PendingFeedbackCount),
					"Dispositions extension", ext,
				}
				if st.Node != "" {
					kv = append(kv, "Answered by node", st.Node)
					for _, n := range st.Nodes {
						line := fmt.Sprintf("%d devices, heartbeat %s ago, version %s",
							n.DeviceCount, time.Since(n.HeartbeatTimeUTC).Round(100*time.Millisecond), n.Version)
						if n.APIURL != "" {
							line += ", API " + n.APIURL
						}
						kv = append(kv, "Node "+n.NodeID, line)
					}
				}
				err = fields(cmd.OutOrStdout(), kv...)
			}
			if err != nil {
				return err
			}
			if !out.Healthy {
				return &outcomeError{exit: ExitError, code: "Unhealthy"}
			}
			return nil
		},
	})
	return cmd
}
