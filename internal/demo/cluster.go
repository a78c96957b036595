package demo

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// RunCluster is `make demo-cluster`: PostgreSQL (Debian's package, started in the temporary
// directory), three c2d-hub nodes on it, one agent on simulated hardware that lists the three
// nodes; commands sent through different nodes; the node holding the board is killed with -9 and
// the board carries on through the next node of its list.
func RunCluster(ctx context.Context, opt Options) (err error) {
	if opt.Out == nil {
		opt.Out = os.Stdout
	}
	for _, b := range []string{"c2d-hub", "c2d-agent", "c2d"} {
		if _, err := os.Stat(filepath.Join(opt.BinDir, b)); err != nil {
			return fmt.Errorf("demo needs %s: %w (run make build)", b, err)
		}
	}
	dir, err := os.MkdirTemp("", "c2d-demo-cluster-")
	if err != nil {
		return err
	}
	if opt.Keep {
		defer fmt.Fprintf(opt.Out, "\nkept %s (node data, agent config, board state, logs)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r := &run{opt: opt, dir: dir}
	start := time.Now()
	defer func() {
		if err == nil {
			r.say("\ndemo finished in %.1fs", time.Since(start).Seconds())
		}
	}()
	return r.cluster(ctx)
}

type clusterNode struct {
	name, mqtt, http string
	p                *proc
}

func (r *run) cluster(ctx context.Context) error {
	r.say("== 1. start PostgreSQL (initdb + pg_ctl from Debian's package, fsync on)")
	pg, err := pgtest.Start()
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer pg.Stop()
	store, err := pg.NewDB(ctx)
	if err != nil {
		return err
	}
	r.say("   store: %s", store)
	base := append(os.Environ(), "C2D_HUB_STORE="+store)
	r.env = base

	r.say("\n== 2. start three c2d-hub nodes on it (each: embedded MQTT broker and the whole service API)")
	r.say("   $ export C2D_HUB_STORE=%s", store)
	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		n := &clusterNode{name: fmt.Sprintf("n%d", i+1), mqtt: freeAddr(), http: freeAddr()}
		data := filepath.Join(r.dir, n.name)
		if n.p, err = r.start(ctx, n.name, "c2d-hub", "serve", "--data", data, "--node-id", n.name,
			"--hostname", "localhost", "--mqtt", n.mqtt, "--mqtts", "off", "--http", n.http, "--https", "off", "--amqps", "off",
			"--log-level", "warn"); err != nil {
			return err
		}
		defer n.p.stop(r)
		if _, err := waitEndpoints(ctx, filepath.Join(data, "endpoints.json"), n.p); err != nil {
			return err
		}
		nodes[i] = n
	}
	owner, err := r.output(ctx, "c2d-hub", "connection-string", "--store", store, "--hostname", "localhost")
	if err != nil {
		return err
	}
	r.say("   $ export C2D_CONNECTION_STRING=\"$(c2d-hub connection-string --store $C2D_HUB_STORE --hostname localhost)\"")
	via := func(n *clusterNode) {
		r.env = append(append([]string{}, base...), "C2D_CONNECTION_STRING="+strings.TrimSpace(owner), "C2D_ENDPOINT=http://"+n.http)
		r.say("   $ export C2D_ENDPOINT=http://%s   # node %s", n.http, n.name)
	}
	via(nodes[0])

	r.say("\n== 3. provision the board through node n1; its agent lists the nodes n2, n3, n1")
	if err := r.show(ctx, 0, "c2d", "device", "create", device); err != nil {
		return err
	}
	devConn, err := r.output(ctx, "c2d", "device", "connection-string", device)
	if err != nil {
		return err
	}
	agentDir := filepath.Join(r.dir, "agent")
	if err := os.MkdirAll(filepath.Join(agentDir, "state"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(agentDir, "connection-string"), []byte(devConn), 0o600); err != nil {
		return err
	}
	list := fmt.Sprintf("[tcp://%s, tcp://%s, tcp://%s]", nodes[1].mqtt, nodes[2].mqtt, nodes[0].mqtt)
	cfg := strings.Replace(fmt.Sprintf(agentConfig, r.dir, "NODES"), "tcp://NODES", list, 1)
	r.say("   agent.yaml: connection.broker_url: %s", list)
	cfgPath := filepath.Join(agentDir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	agent, err := r.start(ctx, "agent", "c2d-agent", "--config", cfgPath)
	if err != nil {
		return err
	}
	defer agent.stop(r)
	via(nodes[1]) // connection state is what the node holding the session sees
	if err := r.waitConnected(ctx, agent); err != nil {
		return err
	}
	r.say("   agent connected to node n2")
	board, err := newBoardLog(r, filepath.Join(agentDir, "transitions.jsonl"))
	if err != nil {
		return err
	}

	send := func(n *clusterNode, i int, s Step) error {
		r.say("\n-- %s (sent through node %s)", s.Why, n.name)
		via(n)
		err := r.show(ctx, s.WantExit, "c2d", "send", device, "--props", s.Props, "--mid", fmt.Sprintf("demo-%d", i), "--wait", "20s")
		board.poll()
		return err
	}
	r.say("\n== 4. commands through different nodes; the board is on n2")
	if err := send(nodes[0], 1, Steps[0]); err != nil {
		return err
	}
	if err := send(nodes[2], 2, Steps[1]); err != nil {
		return err
	}
	via(nodes[0])
	if err := r.show(ctx, 0, "c2d", "hub", "status"); err != nil {
		return err
	}
	r.say("\n-- a direct method through node n1: n1 passes it to n2, which holds the board")
	if err := r.show(ctx, 0, "c2d", "invoke", device, "state"); err != nil {
		return err
	}

	r.say("\n== 5. kill -9 node n2, which holds the board")
	if err := nodes[1].p.cmd.Process.Kill(); err != nil {
		return err
	}
	<-nodes[1].p.done
	nodes[1].p.once.Do(func() {}) // killed on purpose: not an early exit
	killed := time.Now()
	via(nodes[2])
	if err := r.waitConnected(ctx, agent); err != nil {
		return err
	}
	r.say("   the agent moved to node n3 %.1fs after the kill", time.Since(killed).Seconds())

	r.say("\n== 6. the board carries on")
	if err := send(nodes[0], 3, Steps[2]); err != nil {
		return err
	}
	if err := send(nodes[2], 4, Steps[3]); err != nil {
		return err
	}
	if err := send(nodes[0], 5, Steps[4]); err != nil {
		return err
	}
	r.say("   board: %s", board.line())

	r.say("\n== 7. stop the agent and the nodes (SIGTERM)")
	if err := agent.stop(r); err != nil {
		return err
	}
	for _, n := range []*clusterNode{nodes[0], nodes[2]} {
		if err := n.p.stop(r); err != nil {
			return err
		}
	}
	return nil
}

// freeAddr is a loopback address with a port free now (the demo's nodes keep fixed ports, which
// the board's list names).
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}
