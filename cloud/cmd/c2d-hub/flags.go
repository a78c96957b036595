package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/c2d-project/c2d/cloud/server"
)

// serveCmd: flags override the config file, which overrides the defaults.
func serveCmd() *cobra.Command { return serveCommand(server.Run) }

// serveCommand resolves the configuration (defaults, then --config, then flags, then the
// environment's data directory and host name), validates it and hands it to run.
func serveCommand(run func(context.Context, server.Config) error) *cobra.Command {
	var configPath string
	d := server.Default()
	flags := &server.Config{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub (MQTT broker, durable queues, service API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.Load(configPath)
			if err != nil {
				return err
			}
			override(cmd.Flags(), &cfg, flags)
			if err := cfg.Resolve(); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&flags.DataDir, "data", "", "data directory (default $STATE_DIRECTORY, $XDG_STATE_HOME/c2d-hub or ~/.local/state/c2d-hub)")
	f.StringVar(&configPath, "config", "", "YAML configuration file (see configs/hub.yaml)")
	f.StringVar(&flags.HostName, "hostname", "", "host name devices connect to and sign tokens for (default: this machine's host name)")
	f.StringVar(&flags.Store, "store", "", `where the state lives: "sqlite" (DATA/hub.db) or a PostgreSQL connection string shared by a cluster's nodes (default $C2D_HUB_STORE, else sqlite)`)
	f.StringVar(&flags.NodeID, "node-id", "", "this node's name in a cluster (default: the host name)")
	f.StringVar(&flags.Listen.MQTT, "mqtt", d.Listen.MQTT, `plain MQTT listen address, or "off"`)
	f.StringVar(&flags.Listen.MQTTS, "mqtts", d.Listen.MQTTS, `MQTT over TLS listen address, or "off"`)
	f.StringVar(&flags.Listen.HTTP, "http", d.Listen.HTTP, `plain HTTP service API listen address, or "off"`)
	f.StringVar(&flags.Listen.HTTPS, "https", d.Listen.HTTPS, `HTTPS service API listen address, or "off"`)
	f.StringVar(&flags.Listen.WS, "ws", d.Listen.WS, `MQTT over WebSockets listen address, or "off"`)
	f.StringVar(&flags.Listen.WSS, "wss", d.Listen.WSS, `MQTT over secure WebSockets listen address, or "off"`)
	f.StringVar(&flags.Listen.AMQPS, "amqps", d.Listen.AMQPS, `AMQP over TLS listen address (Azure's service SDKs), or "off"`)
	f.StringVar(&flags.Listen.AMQP, "amqp", d.Listen.AMQP, `plain AMQP listen address, or "off"`)
	f.StringVar(&flags.Listen.Debug, "debug-listen", d.Listen.Debug, `net/http/pprof profiling listen address, loopback only (127.0.0.1:6060), or "off"`)
	f.StringVar(&flags.TLS.CertFile, "tls-cert", "", "server certificate (PEM) instead of the generated CA's")
	f.StringVar(&flags.TLS.KeyFile, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&flags.Log.Level, "log-level", d.Log.Level, "debug, info, warn or error")
	f.StringVar(&flags.Log.Format, "log-format", d.Log.Format, "text or json")
	return cmd
}

// override copies every flag the user set onto cfg.
func override(fs *pflag.FlagSet, cfg, flags *server.Config) {
	set := map[string]func(){
		"data":         func() { cfg.DataDir = flags.DataDir },
		"hostname":     func() { cfg.HostName = flags.HostName },
		"store":        func() { cfg.Store = flags.Store },
		"node-id":      func() { cfg.NodeID = flags.NodeID },
		"mqtt":         func() { cfg.Listen.MQTT = flags.Listen.MQTT },
		"mqtts":        func() { cfg.Listen.MQTTS = flags.Listen.MQTTS },
		"http":         func() { cfg.Listen.HTTP = flags.Listen.HTTP },
		"https":        func() { cfg.Listen.HTTPS = flags.Listen.HTTPS },
		"ws":           func() { cfg.Listen.WS = flags.Listen.WS },
		"wss":          func() { cfg.Listen.WSS = flags.Listen.WSS },
		"amqps":        func() { cfg.Listen.AMQPS = flags.Listen.AMQPS },
		"amqp":         func() { cfg.Listen.AMQP = flags.Listen.AMQP },
		"debug-listen": func() { cfg.Listen.Debug = flags.Listen.Debug },
		"tls-cert":     func() { cfg.TLS.CertFile = flags.TLS.CertFile },
		"tls-key":      func() { cfg.TLS.KeyFile = flags.TLS.KeyFile },
		"log-level":    func() { cfg.Log.Level = flags.Log.Level },
		"log-format":   func() { cfg.Log.Format = flags.Log.Format },
	}
	fs.Visit(func(f *pflag.Flag) {
		if apply, ok := set[f.Name]; ok {
			apply()
		}
	})
}

func connectionStringCmd() *cobra.Command {
	var dataDir, configPath, hostName, policy, store string
	cmd := &cobra.Command{
		Use:   "connection-string",
		Short: "Print a shared access policy's connection string (works while the hub runs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.Load(configPath)
			if err != nil {
				return err
			}
			if dataDir != "" {
				cfg.DataDir = dataDir
			}
			if store != "" {
				cfg.Store = store
			}
			if err := cfg.Resolve(); err != nil {
				return err
			}
			// The host name is the one the hub signs for: --hostname, else the running (or last)
			// hub's endpoints.json, else the config/default.
			switch {
			case hostName != "":
				cfg.HostName = hostName
			default:
				if ep, err := server.ReadEndpoints(cfg.DataDir); err == nil && ep.HostName != "" {
					cfg.HostName = ep.HostName
				}
			}
			cs, err := server.StoreConnectionString(cmd.Context(), cfg.Store, cfg.DataDir, cfg.HostName, policy)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), cs.String())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "", "data directory of the hub (default as for serve)")
	f.StringVar(&store, "store", "", "the hub's store, as for serve: a cluster's PostgreSQL prints the cluster's policies")
	f.StringVar(&configPath, "config", "", "YAML configuration file (for data_dir and hostname)")
	f.StringVar(&hostName, "hostname", "", "HostName to put in the string (default: the hub's, from endpoints.json)")
	f.StringVar(&policy, "policy", "iothubowner", "policy: iothubowner, service, registryRead, registryReadWrite or device")
	return cmd
}
