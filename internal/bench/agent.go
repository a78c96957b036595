package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// AgentOutput is one output of a generated agent config.
type AgentOutput struct {
	Name, Pin   string
	Actions     []string
	MaxDuration time.Duration // default 10s
	MinInterval time.Duration // default 10ms
}

// AgentSetup describes one c2d-agent with the sim hardware backend, everything under Dir.
type AgentSetup struct {
	Dir      string // state dir, sim state file, transition log, config, log
	MQTTAddr string // the hub's plain MQTT address (host:port)
	// MQTTAddrs, when set, is a cluster's nodes (host:port each): broker_url becomes the list the
	// agent fails over along, in order. MQTTAddr is then unused.
	MQTTAddrs    []string
	HostName     string // the hub's --hostname, which the SAS token is signed for; default HostName
	DeviceID     string
	Key          string
	ReconnectMin time.Duration // default 100ms
	ReconnectMax time.Duration // default 1s
	Outputs      []AgentOutput // default: out1 (GPIO17) with on, off, toggle, pulse
	// Dispositions is connection.dispositions: "extension" (default: explicit complete/reject over
	// c2d's extension) or "azure" (Azure's dialect: the PUBACK completes).
	Dispositions string
	KeepAlive    time.Duration // connection.keep_alive; default 30s (the agent allows 5s and up)
	// BoardDir holds the sim board's state file and transition log (default Dir). The bench puts
	// them on tmpfs: they stand in for GPIO registers, and an atomic file replace per transition
	// on the data disk is not what a board's output costs.
	BoardDir string
}

// ConfigPath, TransitionLog, StateFile and LogPath are where the agent's files live.
func (a AgentSetup) ConfigPath() string    { return filepath.Join(a.Dir, "agent.yaml") }
func (a AgentSetup) TransitionLog() string { return filepath.Join(a.boardDir(), "transitions.jsonl") }
func (a AgentSetup) StateFile() string     { return filepath.Join(a.boardDir(), "outputs.json") }

func (a AgentSetup) boardDir() string {
	if a.BoardDir != "" {
		return a.BoardDir
	}
	return a.Dir
}
func (a AgentSetup) LogPath() string { return filepath.Join(a.Dir, "agent.log") }

// ReconnectBound is the longest the agent may wait before a reconnect attempt (its reconnect_max).
func (a AgentSetup) ReconnectBound() time.Duration {
	if a.ReconnectMax == 0 {
		return time.Second
	}
	return a.ReconnectMax
}

// WriteConfig writes the agent's YAML config (and creates Dir).
func (a AgentSetup) WriteConfig() error {
	if a.ReconnectMin == 0 {
		a.ReconnectMin = 100 * time.Millisecond
	}
	if a.ReconnectMax == 0 {
		a.ReconnectMax = time.Second
	}
	if a.KeepAlive == 0 {
		a.KeepAlive = 30 * time.Second
	}
	if a.Dispositions == "" {
		a.Dispositions = "extension"
	}
	if len(a.Outputs) == 0 {
		a.Outputs = []AgentOutput{{Name: "out1", Pin: "GPIO17", Actions: []string{"on", "off", "toggle", "pulse"}}}
	}
	if err := os.MkdirAll(filepath.Join(a.Dir, "state"), 0o700); err != nil {
		return err
	}
	host := a.HostName
	if host == "" {
		host = HostName
	}
	cs := iothub.DeviceConnectionString{HostName: host, DeviceID: a.DeviceID, SharedAccessKey: a.Key}
	brokers := "tcp://" + a.MQTTAddr
	if len(a.MQTTAddrs) > 0 {
		urls := make([]string, len(a.MQTTAddrs))
		for i, addr := range a.MQTTAddrs {
			urls[i] = "tcp://" + addr
		}
		brokers = "[" + strings.Join(urls, ", ") + "]"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "connection:\n  connection_string: %q\n  broker_url: %s\n", cs.String(), brokers)
	fmt.Fprintf(&b, "  keep_alive: %s\n  connect_timeout: 5s\n  reconnect_min: %s\n  reconnect_max: %s\n  dispositions: %s\n", a.KeepAlive, a.ReconnectMin, a.ReconnectMax, a.Dispositions)
	fmt.Fprintf(&b, "hardware:\n  backend: sim\n  sim:\n    state_file: %s\n    transition_log: %s\n", a.StateFile(), a.TransitionLog())
	fmt.Fprintf(&b, "state_dir: %s\nready_timeout: 30s\noutputs:\n", filepath.Join(a.Dir, "state"))
	for _, o := range a.Outputs {
		if o.MaxDuration == 0 {
			o.MaxDuration = 10 * time.Second
		}
		if o.MinInterval == 0 {
			o.MinInterval = 10 * time.Millisecond
		}
		fmt.Fprintf(&b, "  %s:\n    pin: %s\n    safe: off\n    actions: [%s]\n    max_duration: %s\n    min_interval: %s\n",
			o.Name, o.Pin, strings.Join(o.Actions, ", "), o.MaxDuration, o.MinInterval)
	}
	return os.WriteFile(a.ConfigPath(), []byte(b.String()), 0o600)
}

// AgentProc is a running c2d-agent.
type AgentProc struct {
	*Proc
	// Ready is how long the process took from exec to sending READY=1 over NOTIFY_SOCKET.
	Ready time.Duration
}

// StartAgent writes the config and starts bin with NOTIFY_SOCKET pointing at a socket of ours,
// returning once the agent says READY=1 (it does so on its first connection).
func StartAgent(ctx context.Context, bin string, a AgentSetup) (*AgentProc, error) {
	if err := a.WriteConfig(); err != nil {
		return nil, err
	}
	sock := filepath.Join(a.Dir, "notify.sock")
	_ = os.Remove(sock)
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	defer ln.Close()
	defer os.Remove(sock)
	p, err := StartProc(bin, []string{"--config", a.ConfigPath()}, []string{"NOTIFY_SOCKET=" + sock}, a.LogPath())
	if err != nil {
		return nil, err
	}
	ready := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					ready <- time.Now()
					return
				}
			}
		}
	}()
	select {
	case t := <-ready:
		return &AgentProc{Proc: p, Ready: t.Sub(p.Start)}, nil
	case <-p.Exited:
		return nil, fmt.Errorf("c2d-agent exited before READY=1 (log %s)", a.LogPath())
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		p.Kill()
		return nil, errors.New("c2d-agent sent no READY=1 within 60s (log " + a.LogPath() + ")")
	}
}
