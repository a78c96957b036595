package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/bench"
)

// clusterBoards are real c2d-agents on simulated boards among the cluster chaos's devices, each
// with the three nodes as its broker_url list (failover in order, as on a Pi). Toggles reach them
// through random nodes while the nodes die, stop and lose their database: the boards' transition
// logs then show whether a redelivery after a fault moved an output twice (the invariant "no
// output moved twice", which the agent's executed-id log exists to hold).
type clusterBoards struct {
	t      *testing.T
	setups []bench.AgentSetup
	procs  []*bench.AgentProc
	sends  sendLog
	stop   chan struct{}
	wg     sync.WaitGroup
}

// startClusterBoards registers and starts n agents; board i lists the nodes starting at node i%len.
func startClusterBoards(ctx context.Context, t *testing.T, n int, host string, nodeAddrs []string, c *apiclient.Client) *clusterBoards {
	t.Helper()
	b := &clusterBoards{t: t, stop: make(chan struct{})}
	dir := t.TempDir()
	for i := range n {
		id := fmt.Sprintf("board-%d", i)
		d, err := c.CreateDevice(ctx, id, "", "")
		if err != nil {
			t.Fatal(err)
		}
		addrs := make([]string, len(nodeAddrs))
		for j := range nodeAddrs {
			addrs[j] = nodeAddrs[(i+j)%len(nodeAddrs)]
		}
		// Keep-alive 5 s (the agent's least): a stopped node is noticed as soon as the in-test
		// devices notice it.
		setup := bench.AgentSetup{Dir: filepath.Join(dir, id), DeviceID: id, Key: d.Authentication.SymmetricKey.PrimaryKey,
			HostName: host, MQTTAddrs: addrs, KeepAlive: 5 * time.Second}
		p, err := bench.StartAgent(ctx, agentBin, setup)
		if err != nil {
			dumpLog(t, setup.LogPath())
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.Stop(10 * time.Second)
			if t.Failed() {
				dumpLog(t, setup.LogPath())
			}
		})
		b.setups = append(b.setups, setup)
		b.procs = append(b.procs, p)
	}
	return b
}

// load toggles every board through random nodes, one toggle every 50–150 ms per board, until
// stopLoad.
func (b *clusterBoards) load(client func() *apiclient.Client) {
	for _, s := range b.setups {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for {
				select {
				case <-b.stop:
					return
				case <-time.After(randDelay(50*time.Millisecond, 150*time.Millisecond)): // the load's rate
				}
				b.sends.send(client(), s.DeviceID, "toggle", toggleReq())
			}
		}()
	}
}

func (b *clusterBoards) stopLoad() {
	close(b.stop)
	b.wg.Wait()
}

// check waits until every toggle the hub stored is terminal (asking random nodes), stops the
// agents, and checks each board's transitions against its completed toggles. It returns the
// toggles acknowledged and the transitions checked.
func (b *clusterBoards) check(ctx context.Context, client func() *apiclient.Client) (acked, moves int) {
	t := b.t
	t.Helper()
	byDev := map[string][]outcome{}
	var storedRefused []string
	for _, m := range b.sends.all() {
		if m.acked {
			acked++
		}
		// Refused sends are asked about too: a refusal whose message was stored after all
		// still moves the board when it is delivered.
		o, err := b.outcome(ctx, client, m)
		if err != nil {
			t.Error(err)
			continue
		}
		if o.exists {
			byDev[m.dev] = append(byDev[m.dev], o)
			if !m.acked && !m.unknown {
				storedRefused = append(storedRefused, fmt.Sprintf("%s/%s (%s, then %s)", m.dev, m.mid, m.code, o.status.Outcome))
			}
		}
	}
	if len(storedRefused) > 0 {
		t.Logf("cluster chaos boards: %d toggles refused with an error but stored: %v", len(storedRefused), storedRefused)
	}
	failedOver := 0
	var report []string
	sent := map[string]*sentMsg{}
	for _, m := range b.sends.all() {
		sent[m.mid] = m
	}
	for i, s := range b.setups {
		b.procs[i].Stop(10 * time.Second) // nothing more moves
		n := checkToggles(t, byDev[s.DeviceID], s)
		moves += n
		// Which messages the agent ran, from its log, against what the hub says of them: names
		// the message behind a failed count above.
		ok := map[string]bool{}
		for _, o := range byDev[s.DeviceID] {
			ok[o.msg.mid] = o.status.Outcome == iothub.StatusSuccess
		}
		lg := readAgentLog(t, s.LogPath())
		total := 0
		for _, c := range lg.runs {
			total += c
		}
		if total != n {
			// Each toggle that runs is one transition: the log and the board must agree, or the
			// check below reads the wrong lines.
			t.Errorf("%s: its log records %d executions, its board %d transitions", s.DeviceID, total, n)
		}
		for mid, c := range lg.runs {
			m := sent[mid]
			switch {
			case c > 1:
				t.Errorf("INVARIANT no output moved twice: %s ran %s %d times", s.DeviceID, mid, c)
			case m == nil:
				t.Errorf("%s ran %s, which the test never sent", s.DeviceID, mid)
			case !ok[mid]:
				t.Errorf("%s ran %s, which the hub does not report completed (send: acknowledged %v, answer lost %v, refused %v)",
					s.DeviceID, mid, m.acked, m.unknown, m.code)
			}
		}
		if len(lg.brokers) > 1 {
			failedOver++
		}
		report = append(report, fmt.Sprintf("%s %d connections to %d nodes", s.DeviceID, lg.conns, len(lg.brokers)))
	}
	t.Logf("cluster chaos boards: %d toggles acknowledged, %d transitions checked; %s", acked, moves, strings.Join(report, ", "))
	if failedOver == 0 {
		t.Error("no board connected to a second node: the faults never made a board fail over, so nothing was checked")
	}
	return acked, moves
}

// agentLog is what the check reads from an agent's log: its executions of each message id, its
// connections and the brokers it connected to.
type agentLog struct {
	runs    map[string]int
	conns   int
	brokers map[string]bool
}

func readAgentLog(t *testing.T, logPath string) agentLog {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	l := agentLog{runs: map[string]int{}, brokers: map[string]bool{}}
	field := func(line, key string) string {
		_, rest, _ := strings.Cut(line, " "+key+"=")
		v, _, _ := strings.Cut(rest, " ")
		return v
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, " msg=accepted "):
			l.runs[field(line, "mid")]++
		case strings.Contains(line, " msg=connected "):
			l.conns++
			l.brokers[field(line, "broker")] = true
		}
	}
	return l
}

// outcome asks random nodes (one may be restarting) for m's terminal state.
func (b *clusterBoards) outcome(ctx context.Context, client func() *apiclient.Client, m *sentMsg) (outcome, error) {
	o := outcome{msg: m}
	var err error
	for range 5 {
		var st iothub.MessageStatus
		st, err = client().MessageStatus(ctx, m.dev, m.mid, 60*time.Second)
		var ie *iothub.Error
		if errors.As(err, &ie) && ie.Code == iothub.CodeDeviceMessageNotFound {
			if m.acked {
				return o, fmt.Errorf("INVARIANT acknowledged message never lost: toggle %s/%s (201) is unknown to the hub", m.dev, m.mid)
			}
			return o, nil // its send's answer was lost, and it was never stored
		}
		if err == nil && st.Outcome != "" {
			if want := st.Outcome.Terminal(); st.State != want {
				return o, fmt.Errorf("INVARIANT one terminal state: toggle %s has outcome %s but state %s (want %s)", m.mid, st.Outcome, st.State, want)
			}
			o.exists, o.status = true, st
			return o, nil
		}
	}
	return o, fmt.Errorf("INVARIANT every acknowledged message ends terminal: toggle %s/%s: %v", m.dev, m.mid, err)
}
