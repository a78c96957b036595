package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/server"
)

// policyCmd is `c2d-hub policy renew-key NAME`: rotate a shared access policy's key, on a running
// hub (through its API, dropping what the old key let in) or a stopped one.
func policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Manage shared access policies"}
	var dataDir, configPath, which string
	renew := &cobra.Command{
		Use:   "renew-key NAME",
		Short: "Replace a policy's primary or secondary key (or swap them); tokens signed with the old key stop working",
		Long: `Replace a shared access policy's primary or secondary key with a fresh random one, or swap the two.
Tokens signed with a replaced key stop working at once, and MQTT sessions that connected with
them are dropped. Rotate without downtime: move clients to the secondary key, renew the
primary, move them back, renew the secondary. Prints the policy's new connection string.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := server.Load(configPath)
			if err != nil {
				return err
			}
			if dataDir != "" {
				cfg.DataDir = dataDir
			}
			if err := cfg.Resolve(); err != nil {
				return err
			}
			if ep, err := server.ReadEndpoints(cfg.DataDir); err == nil && ep.HostName != "" {
				cfg.HostName = ep.HostName
			}
			pk, err := server.RenewPolicyKey(cmd.Context(), cfg, args[0], which)
			if err != nil {
				return err
			}
			cs, err := server.ConnectionString(cmd.Context(), cfg.DataDir, cfg.HostName, pk.KeyName)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "renewed the %s key of policy %s\n%s\n", which, pk.KeyName, cs)
			return err
		},
	}
	f := renew.Flags()
	f.StringVar(&dataDir, "data", "", "data directory of the hub (default as for serve)")
	f.StringVar(&configPath, "config", "", "YAML configuration file (for data_dir)")
	f.StringVar(&which, "key", "primary", "which key: primary, secondary or swap")
	cmd.AddCommand(renew)
	return cmd
}
