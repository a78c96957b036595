package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
	"github.com/c2d-project/c2d/internal/testproc"
)

// TestChaosCluster: three c2d-hub nodes on one PostgreSQL (fsync on), devices spread over the
// nodes, each with the nodes as its failover list, commands sent through random nodes while a node
// is killed with -9 (and restarted), a node is SIGSTOPped past its heartbeat timeout and resumed,
// and PostgreSQL is stopped with `pg_ctl stop -m immediate` and started again. Then: every
// acknowledged send ends in exactly one terminal state, with exactly one feedback record; no
// message is left pending; each device's duplicate deliveries stay within what was in flight on
// the sessions it lost; no board's output moved twice. Most devices are MQTT clients in the test
// (PUBACK completes, Azure's dialect); a few are real c2d-agents on simulated boards with the
// nodes as their broker_url list, toggled through random nodes (cluster_boards_test.go), whose
// transition logs show that the executed-id log makes the redeliveries harmless.
func TestChaosCluster(t *testing.T) {
	pgtest.Need(t)
	nDev, nCmd := 60, 1500
	if long() {
		nDev, nCmd = 1000, 20000
	}
	const maxInFlight = 4
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	url, err := pg.NewDB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("C2D_HUB_STORE", url) // serve and connection-string read the store from it

	const host = "chaos.c2d.test"
	cfg := fmt.Sprintf("queue:\n  max_queue_depth: 5000\n  max_in_flight: %d\n  lock_timeout: 10s\nfeedback:\n  interval: 50ms\n", maxInFlight)
	type node struct {
		name, data, mqtt, http string
		h                      *testproc.Hub
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = &node{name: fmt.Sprintf("n%d", i+1), data: filepath.Join(t.TempDir(), "data"), mqtt: freePort(t), http: freePort(t)}
	}
	// nodeMu guards each node's h: a fault restarts a node while senders pick nodes.
	var nodeMu sync.RWMutex
	killedLogs := map[string][]string{} // node → the logs of its killed processes, for a failure report; nodeMu
	hubOf := func(n *node) *testproc.Hub { nodeMu.RLock(); defer nodeMu.RUnlock(); return n.h }
	startNode := func(n *node) error {
		h, err := testproc.RunHub(context.Background(), hubBin, testproc.HubOptions{
			Data: n.data, Config: cfg,
			Args: []string{"--node-id", n.name, "--hostname", host, "--log-level", "warn",
				"--mqtt", n.mqtt, "--http", n.http, "--mqtts", "off", "--https", "off", "--amqps", "off"},
		})
		if err != nil {
			return fmt.Errorf("start node %s: %w", n.name, err)
		}
		nodeMu.Lock()
		n.h = h
		nodeMu.Unlock()
		return nil
	}
	for _, n := range nodes {
		if err := startNode(n); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			h := hubOf(n)
			syscall.Kill(h.Endpoints.PID, syscall.SIGCONT)
			h.Stop()
			if t.Failed() {
				for i, l := range killedLogs[n.name] {
					t.Logf("%s log, process %d (killed):\n%s", n.name, i+1, l)
				}
				t.Logf("%s log, the last process:\n%s", n.name, h.Log)
			}
		}
	})
	client := func() *apiclient.Client { return hubOf(nodes[rand.IntN(len(nodes))]).Client }
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	// Devices, spread over the nodes: device i starts on node i%3 and fails over to the next.
	devs := make([]*clusterDev, nDev)
	for i := range devs {
		id := fmt.Sprintf("cd-%04d", i)
		d, err := hubOf(nodes[0]).Client.CreateDevice(ctx, id, "", "")
		if err != nil {
			t.Fatal(err)
		}
		addrs := make([]string, len(nodes))
		for j := range nodes {
			addrs[j] = nodes[(i+j)%len(nodes)].mqtt
		}
		devs[i] = &clusterDev{id: id, key: d.Authentication.SymmetricKey.PrimaryKey, addrs: addrs, got: map[string]int{}, sentAt: map[string]time.Time{}}
	}
	byID := make(map[string]*clusterDev, len(devs))
	for _, d := range devs {
		byID[d.id] = d
	}
	nBoards := 2
	if long() {
		nBoards = 6
	}
	nodeAddrs := make([]string, len(nodes))
	for i, n := range nodes {
		nodeAddrs[i] = n.mqtt
	}
	boards := startClusterBoards(ctx, t, nBoards, host, nodeAddrs, hubOf(nodes[0]).Client)
	devCtx, stopDevs := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(devCtx, host) }()
	}
	defer func() { stopDevs(); wg.Wait() }()

	// Commands through random nodes; the faults happen at fixed points of the run.
	var mu sync.Mutex
	acked := map[[2]string]bool{}
	var refused atomic.Int64
	var refusedMu sync.Mutex
	refusedBy := map[string]int{} // why: an Azure error name, or the transport error's kind
	next := atomic.Int64{}
	kill := func(n *node) func() {
		return func() {
			t.Logf("fault: kill -9 node %s", n.name)
			h := hubOf(n)
			h.Kill()
			nodeMu.Lock()
			killedLogs[n.name] = append(killedLogs[n.name], h.Log.String())
			nodeMu.Unlock()
			countFault("cluster node kill -9")
			// As the unit does (Restart=on-failure, RestartSec=2): a start while PostgreSQL is
			// down or still recovering (another fault) fails, and is tried again.
			var err error
			for try := 0; try < 30; try++ {
				time.Sleep(2 * time.Second)
				if err = startNode(n); err == nil {
					break
				}
				t.Logf("restart node %s (try %d): %v", n.name, try+1, firstLine(err))
			}
			if err != nil {
				t.Error(err)
			}
		}
	}
	stop := func(n *node) func() {
		return func() {
			t.Logf("fault: SIGSTOP node %s past its heartbeat timeout", n.name)
			pid := hubOf(n).Endpoints.PID
			syscall.Kill(pid, syscall.SIGSTOP)
			countFault("cluster node SIGSTOP")
			time.Sleep(7 * time.Second)
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	pgFaults := 0 // written by the sender that runs the fault, read after senders.Wait
	pgStop := func() {
		pgFaults++
		t.Log("fault: pg_ctl stop -m immediate, then start")
		if err := pg.Kill(); err != nil {
			t.Error(err)
		}
		countFault("PostgreSQL immediate stop")
		time.Sleep(time.Second)
		if err := pg.Restart(); err != nil {
			t.Error(err)
		}
	}
	at := func(pct int) int64 { return int64(nCmd) * int64(pct) / 100 }
	faultAt := map[int64]func(){at(30): kill(nodes[0]), at(55): stop(nodes[1]), at(80): pgStop}
	if long() { // several kills of different nodes, the stop and the database restart between them
		faultAt = map[int64]func(){at(15): kill(nodes[0]), at(30): kill(nodes[2]), at(45): stop(nodes[1]),
			at(60): kill(nodes[1]), at(75): pgStop, at(88): kill(nodes[0])}
	}
	boards.load(client)
	var senders sync.WaitGroup
	for range 8 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for {
				k := next.Add(1)
				if k > int64(nCmd) {
					return
				}
				if f := faultAt[k]; f != nil {
					f()
				}
				d := devs[rand.IntN(len(devs))]
				// As an operator's script would: a node that refuses the connection (killed, not
				// yet restarted) stored nothing, so the same send goes to another node; a hub that
				// answers ServiceUnavailable (its database is away) is asked again 100 ms later, a
				// few times, with a new message id (its answer does not say the message was not
				// stored; a stored one is then an unacknowledged send, as below).
				var err error
				var mid string
				for try := 0; try < 20; try++ {
					if try == 0 || !errors.Is(err, syscall.ECONNREFUSED) {
						mid = "c" + strconv.FormatInt(k, 10) + "." + strconv.Itoa(try)
						d.sent(mid)
					}
					_, err = client().Send(ctx, d.id, iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull})
					var ie *iothub.Error
					if errors.As(err, &ie) && ie.Code == iothub.CodeServiceUnavailable {
						sleepCtx(ctx, 100*time.Millisecond) // the retry's pace, as Retry-After asks
						continue
					}
					if !errors.Is(err, syscall.ECONNREFUSED) {
						break
					}
				}
				if err != nil {
					refused.Add(1) // not acknowledged: it must not matter what became of it
					why := "no answer"
					var ie *iothub.Error
					switch {
					case errors.As(err, &ie):
						why = ie.Code.String()
					case errors.Is(err, syscall.ECONNREFUSED):
						why = "connection refused"
					}
					refusedMu.Lock()
					refusedBy[why]++
					refusedMu.Unlock()
					continue
				}
				mu.Lock()
				acked[[2]string{d.id, mid}] = true
				mu.Unlock()
			}
		}()
	}
	senders.Wait()
	boards.stopLoad()
	totals.acked += len(acked)

	// Every acknowledged send ends in exactly one terminal state.
	keys := make([][2]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	var bad []string
	var badMu sync.Mutex
	sem := make(chan struct{}, 16)
	var checks sync.WaitGroup
	for _, k := range keys {
		checks.Add(1)
		sem <- struct{}{}
		go func() {
			defer checks.Done()
			defer func() { <-sem }()
			var st iothub.MessageStatus
			var err error
			for range 5 { // a node may be restarting: ask another
				if st, err = client().MessageStatus(ctx, k[0], k[1], 60*time.Second); err == nil && st.Outcome != "" {
					break
				}
			}
			if err != nil || st.Outcome != iothub.StatusSuccess {
				d := byID[k[0]]
				d.mu.Lock()
				got, reconnects, cf, sf := d.got[k[1]], d.reconnects, d.connFails, d.subFails
				events := strings.Join(d.events, "; ")
				d.mu.Unlock()
				badMu.Lock()
				bad = append(bad, fmt.Sprintf("%s/%s: %s %s %v (delivery count %d; the device received it %d times, reconnected %d times, %d connects and %d subscribes failed; latest: %s)",
					k[0], k[1], st.State, st.Outcome, err, st.DeliveryCount, got, reconnects, cf, sf, events))
				badMu.Unlock()
			}
		}()
	}
	checks.Wait()
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Errorf("%d of %d acknowledged messages did not complete, e.g. %v", len(bad), len(acked), bad[:min(5, len(bad))])
	}
	// No output moved twice: every board's transitions are its completed toggles, one each.
	toggled, moves := boards.check(ctx, client)
	totals.acked += toggled
	tally(nil, moves)

	// Nothing stays pending (Invisible past its lock, or stuck Enqueued). The acknowledged sends
	// were waited for above; a send whose answer a fault lost may be stored too, and still on its
	// way: locked by a node that died, it waits for its lock (10 s) or the dead node's release.
	// A minute is several times either.
	drained := time.Now().Add(time.Minute)
	for {
		st, err := hubOf(nodes[2]).Client.Status(ctx)
		if err == nil && st.QueuedMessageCount == 0 {
			break
		}
		if time.Now().After(drained) {
			t.Errorf("a minute after the run: %d messages still queued (%v)", st.QueuedMessageCount, err)
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the hub's state, not standing in for it
	}

	// Exactly one feedback record per acknowledged message (ack full, outcome Success), through
	// whichever node answers.
	// (A send whose answer was lost in a fault may have been stored too: it has its record as well.)
	recs := map[[2]string]int{}
	for empty := 0; empty < 2; {
		fb, err := client().ReceiveFeedback(ctx, 3*time.Second)
		if err != nil {
			continue // a node that is still restarting
		}
		if fb == nil {
			empty++ // twice, through random nodes: nothing is left
			continue
		}
		for _, r := range fb.Records {
			recs[[2]string{r.DeviceID, r.OriginalMessageID}]++
			if r.StatusCode != iothub.StatusSuccess {
				t.Errorf("feedback %s/%s: %s", r.DeviceID, r.OriginalMessageID, r.StatusCode)
			}
		}
		if err := client().CompleteFeedback(ctx, fb.LockToken); err != nil {
			t.Logf("complete feedback: %v (the batch is offered again)", err)
		}
	}
	totals.feedback += len(recs)
	for k := range acked {
		if recs[k] != 1 {
			t.Errorf("%s/%s: %d feedback records, want 1", k[0], k[1], recs[k])
		}
	}
	for k, n := range recs {
		if n > 1 {
			t.Errorf("%s/%s: %d feedback records for one message", k[0], k[1], n)
		}
	}

	// Duplicates: a message reaches a device again only when a fault took the lock of what was in
	// flight on its session: the connection was lost (its node killed or stopped, or the device
	// moved), or PostgreSQL restarted under it (a settle that did not commit). Bound, per device:
	// max_in_flight for each connection it lost and each database restart.
	dups, moved, bound := 0, 0, 0
	var gaps, reattach, afterBack []time.Duration
	var over []string
	for _, d := range devs {
		d.mu.Lock()
		dd := 0
		for _, n := range d.got {
			if n > 1 {
				dd += n - 1
			}
		}
		dups += dd
		b := maxInFlight * (d.reconnects + pgFaults)
		bound += b
		if dd > b {
			over = append(over, fmt.Sprintf("%s: %d duplicates after %d lost connections (bound %d)", d.id, dd, d.reconnects, b))
		}
		if d.reconnects > 0 {
			moved++
		}
		gaps = append(gaps, d.gaps...)
		reattach = append(reattach, d.reattach...)
		afterBack = append(afterBack, d.afterBack...)
		d.mu.Unlock()
	}
	if len(over) > 0 {
		sort.Strings(over)
		t.Errorf("INVARIANT duplicates ≤ what was in flight where a fault struck: %d devices over, e.g. %v", len(over), over[:min(5, len(over))])
	}
	pcts := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))].Round(time.Millisecond) }
		return fmt.Sprintf("p50 %v p99 %v max %v (n=%d)", p(0.5), p(0.99), p(1), len(ds))
	}
	t.Logf("cluster chaos: %d devices, %d commands, %d faults (%d acknowledged, %d refused during faults: %v), %d feedback records, %d duplicate deliveries (bound %d), %d devices reconnected",
		nDev, nCmd, len(faultAt), len(acked), refused.Load(), refusedBy, len(recs), dups, bound, moved)
	t.Logf("cluster chaos: connection lost → subscribed on a node again: %s", pcts(reattach))
	t.Logf("cluster chaos: subscribed again → first delivery of a message waiting for it: %s", pcts(afterBack))
	t.Logf("cluster chaos: connection lost → first delivery of a message waiting for it: %s", pcts(gaps))
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// clusterDev is one simulated device: an MQTT client that tries its nodes in order, stays on the
// one it connected to, and counts what it receives (PUBACK completes, as Azure's SDKs do).
type clusterDev struct {
	id, key string
	addrs   []string

	mu         sync.Mutex
	got        map[string]int
	sentAt     map[string]time.Time // message id → when its send started
	reconnects int
	connFails  int             // CONNECT not acknowledged in time, or refused
	subFails   int             // SUBSCRIBE not acknowledged in time, or refused
	events     []string        // the latest connection events, newest last, for the failure report
	lostAt     time.Time       // first connection loss with nothing delivered since
	lastLost   time.Time       // latest connection loss
	backAt     time.Time       // last subscribed again after lostAt
	gaps       []time.Duration // connection lost → first delivery after it
	reattach   []time.Duration // connection lost → subscribed on a node again
	afterBack  []time.Duration // subscribed again → first delivery of a message sent before that
}

func (d *clusterDev) sent(mid string) {
	d.mu.Lock()
	d.sentAt[mid] = time.Now()
	d.mu.Unlock()
}

func (d *clusterDev) run(ctx context.Context, host string) {
	cs := iothub.DeviceConnectionString{HostName: host, DeviceID: d.id, SharedAccessKey: d.key}
	cur := 0
	for ctx.Err() == nil {
		lost := make(chan struct{}, 1)
		tok, _ := cs.Token(time.Now(), time.Hour)
		o := paho.NewClientOptions().AddBroker("tcp://" + d.addrs[cur]).SetClientID(d.id).
			SetUsername(iothub.FormatUsername(host, d.id, "", nil)).SetPassword(tok).
			SetCleanSession(false).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
			SetKeepAlive(5 * time.Second).SetPingTimeout(2 * time.Second).SetConnectTimeout(3 * time.Second).
			SetOrderMatters(false).
			SetConnectionLostHandler(func(paho.Client, error) {
				select {
				case lost <- struct{}{}:
				default:
				}
			}).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
				_, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
				if err != nil {
					return
				}
				d.mu.Lock()
				d.got[msg.MessageID]++
				// Only a message that was waiting when the device came back measures how fast the
				// new node delivers; one sent later measures the send rate.
				if !d.lostAt.IsZero() && d.sentAt[msg.MessageID].Before(d.backAt) {
					d.gaps = append(d.gaps, time.Since(d.lostAt))
					d.afterBack = append(d.afterBack, time.Since(d.backAt))
					d.lostAt, d.backAt = time.Time{}, time.Time{}
				} else if !d.lostAt.IsZero() && !d.backAt.IsZero() {
					d.lostAt, d.backAt = time.Time{}, time.Time{} // nothing was waiting
				}
				d.mu.Unlock()
			})
		c := paho.NewClient(o)
		ct := c.Connect()
		if !ct.WaitTimeout(5*time.Second) || ct.Error() != nil {
			d.event("connect %s failed: %v", d.addrs[cur], ct.Error())
			d.mu.Lock()
			d.connFails++
			d.mu.Unlock()
			c.Disconnect(0)
			cur = (cur + 1) % len(d.addrs)
			sleepCtx(ctx, time.Duration(50+rand.IntN(200))*time.Millisecond)
			continue
		}
		st := c.Subscribe(iothub.DeviceBoundFilter(d.id), 1, nil)
		if !st.WaitTimeout(5*time.Second) || st.Error() != nil {
			d.event("subscribe on %s failed: %v", d.addrs[cur], st.Error())
			d.mu.Lock()
			d.subFails++
			d.mu.Unlock()
			c.Disconnect(0)
			cur = (cur + 1) % len(d.addrs)
			continue
		}
		d.event("subscribed on %s", d.addrs[cur])
		d.mu.Lock()
		if !d.lostAt.IsZero() {
			// The latest reattach: a device that lost this node too before anything reached it
			// counts from its last one.
			d.backAt = time.Now()
			d.reattach = append(d.reattach, d.backAt.Sub(d.lastLost))
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			c.Disconnect(0)
			return
		case <-lost:
			d.event("lost %s", d.addrs[cur])
			d.mu.Lock()
			d.reconnects++
			d.lastLost = time.Now()
			if d.lostAt.IsZero() {
				d.lostAt = time.Now()
			}
			d.mu.Unlock()
		}
	}
}

// event records a connection event with its time; only the latest few are kept.
func (d *clusterDev) event(format string, args ...any) {
	e := time.Now().UTC().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.events = append(d.events, e)
	if len(d.events) > 12 {
		d.events = d.events[len(d.events)-12:]
	}
	d.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
