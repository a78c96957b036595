package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw/simhw"
	"github.com/c2d-project/c2d/internal/bench"
)

var longFlag = flag.Bool("long", false, "run the long fault-injection suite (also C2D_CHAOS_LONG=1)")

var hubBin, agentBin string

// totals across the package's tests, printed by TestMain.
var totals struct {
	sync.Mutex
	faults   map[string]int
	acked    int
	unknown  int
	feedback int
	moves    int
}

func TestMain(m *testing.M) {
	flag.Parse()
	code, err := mainErr(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func mainErr(m *testing.M) (int, error) {
	if dir := os.Getenv("C2D_CHAOS_BIN"); dir != "" {
		// Prebuilt binaries (e.g. make's bin/): test exactly what ships.
		hubBin, agentBin = filepath.Join(dir, "c2d-hub"), filepath.Join(dir, "c2d-agent")
		for _, b := range []string{hubBin, agentBin} {
			if _, err := os.Stat(b); err != nil {
				return 0, fmt.Errorf("C2D_CHAOS_BIN: %w", err)
			}
		}
	} else {
		root, err := bench.ModuleRoot()
		if err != nil {
			return 0, err
		}
		dir, err := os.MkdirTemp("", "c2d-chaos-bin-*")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if hubBin, agentBin, err = bench.BuildBinaries(ctx, root, dir); err != nil {
			return 0, err
		}
	}
	totals.faults = map[string]int{}
	code := m.Run()
	var kinds []string
	n := 0
	for k, v := range totals.faults {
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, v))
		n += v
	}
	sort.Strings(kinds)
	mode := "short"
	if long() {
		mode = "long"
	}
	verdict := "nothing lost or duplicated"
	if code != 0 {
		verdict = "INVARIANT OR HARNESS FAILURE (see above)"
	}
	fmt.Printf("chaos summary (%s): %d faults injected (%s); %d messages acknowledged, %d sends with lost answers resolved, %d feedback records checked, %d pin moves checked; %s\n",
		mode, n, strings.Join(kinds, ", "), totals.acked, totals.unknown, totals.feedback, totals.moves, verdict)
	return code, nil
}

func long() bool { return *longFlag || os.Getenv("C2D_CHAOS_LONG") == "1" }

// faults returns the short or long count.
func faults(short, longN int) int {
	if long() {
		return longN
	}
	return short
}

func countFault(kind string) {
	totals.Lock()
	totals.faults[kind]++
	totals.Unlock()
}

// world is one hub (fixed ports, so restarts come back where the agent looks) and its client.
type world struct {
	t   *testing.T
	dir string
	hub *bench.HubProc
	c   *apiclient.Client
	key string
}

const hubConfig = `queue:
  lock_timeout: 2s
  max_queue_depth: %d
  min_ttl: 1s
feedback:
  interval: 50ms
  lock_timeout: 5s
log:
  level: warn
`

func newWorld(t *testing.T, queueDepth int) *world {
	t.Helper()
	dir := t.TempDir()
	mq, err := bench.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ht, err := bench.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hub, err := bench.StartHub(ctx, bench.HubOptions{Bin: hubBin, DataDir: filepath.Join(dir, "hub"),
		Config: fmt.Sprintf(hubConfig, queueDepth), MQTTAddr: mq, HTTPAddr: ht, LogPath: filepath.Join(dir, "hub.log")})
	if err != nil {
		dumpLog(t, filepath.Join(dir, "hub.log"))
		t.Fatal(err)
	}
	w := &world{t: t, dir: dir, hub: hub, c: hub.Client(), key: bench.NewKey()}
	t.Cleanup(func() {
		hub.Close()
		if t.Failed() {
			dumpLog(t, hub.Log.Name())
		}
	})
	return w
}

func dumpLog(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	t.Logf("--- tail of %s ---\n%s", path, b)
}

func (w *world) register(ids ...string) {
	w.t.Helper()
	if err := bench.RegisterDevices(context.Background(), w.c, ids, w.key, 4); err != nil {
		w.t.Fatal(err)
	}
}

// agent starts a c2d-agent for dev, connecting to addr (the hub or a proxy).
func (w *world) agent(dev, addr string, outputs []bench.AgentOutput) (*bench.AgentProc, bench.AgentSetup) {
	w.t.Helper()
	return w.agentWith(bench.AgentSetup{DeviceID: dev, MQTTAddr: addr, Outputs: outputs})
}

// agentWith starts a c2d-agent from setup (Dir and Key filled in).
func (w *world) agentWith(setup bench.AgentSetup) (*bench.AgentProc, bench.AgentSetup) {
	w.t.Helper()
	setup.Dir, setup.Key = filepath.Join(w.dir, "agent-"+setup.DeviceID), w.key
	p, err := bench.StartAgent(context.Background(), agentBin, setup)
	if err != nil {
		dumpLog(w.t, setup.LogPath())
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if w.t.Failed() {
			dumpLog(w.t, setup.LogPath())
		}
	})
	return p, setup
}

// reconnectAllowance is added to the agent's reconnect_max: connect, auth and session attach under
// a loaded 2-core machine (and the race detector in make test).
const reconnectAllowance = 4 * time.Second

// waitConnected polls the hub until dev is Connected with a state change after faultAt (so a
// session from before the fault does not count), within bound from now (the moment the fault is
// over: hub restarted, agent restarted, connection cut): the invariant "the agent is back within
// its backoff bound". It returns how long it took from now.
func (w *world) waitConnected(dev string, faultAt time.Time, bound time.Duration) time.Duration {
	w.t.Helper()
	ctx := context.Background()
	start := time.Now()
	var last iothub.Device
	var lastErr error
	ok := bench.WaitFor(ctx, bound, 20*time.Millisecond, func() bool {
		d, err := w.c.GetDevice(ctx, dev)
		last, lastErr = d, err
		return err == nil && d.ConnectionState == "Connected" && d.ConnectionStateUpdatedTime.After(faultAt)
	})
	took := time.Since(start)
	if !ok {
		w.t.Errorf("INVARIANT agent back within bound: %s not Connected %s after the fault ended (bound %s); last state %q updated %s (fault at %s), err %v",
			dev, took.Round(time.Millisecond), bound, last.ConnectionState, last.ConnectionStateUpdatedTime.Format(time.RFC3339Nano), faultAt.Format(time.RFC3339Nano), lastErr)
	}
	return took
}

// sentMsg is one send attempt.
type sentMsg struct {
	dev, mid string
	kind     string // "toggle", "pulse"
	acked    bool   // 201
	unknown  bool   // transport error: the hub may or may not have stored it
	code     iothub.ErrorCode
}

// sendLog records every send attempt.
type sendLog struct {
	mu   sync.Mutex
	msgs []*sentMsg
	seq  atomic.Int64
}

func (l *sendLog) send(c *apiclient.Client, dev, kind string, req iothub.SendRequest) *sentMsg {
	m := &sentMsg{dev: dev, kind: kind, mid: req.MessageID}
	if m.mid == "" {
		m.mid = fmt.Sprintf("%s-%s-%d", dev, kind, l.seq.Add(1))
		req.MessageID = m.mid
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Send(ctx, dev, req)
	var ie *iothub.Error
	switch {
	case err == nil:
		m.acked = true
	case errors.As(err, &ie):
		m.code = ie.Code
	default:
		m.unknown = true
	}
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
	return m
}

func (l *sendLog) all() []*sentMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*sentMsg(nil), l.msgs...)
}

// refusals summarises the sends the hub refused, by error code ("403004×12"), and those whose
// answer was lost.
func refusals(ms []*sentMsg) string {
	codes := map[string]int{}
	for _, m := range ms {
		switch {
		case m.unknown:
			codes["no answer"]++
		case !m.acked:
			codes[fmt.Sprint(int(m.code))]++
		}
	}
	var parts []string
	for k, v := range codes {
		parts = append(parts, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func props(target, action string, extra ...iothub.AppProperty) []iothub.AppProperty {
	return append([]iothub.AppProperty{{Name: "target", Value: target}, {Name: "action", Value: action}}, extra...)
}

// load sends commands from one goroutine every pace until stop is closed.
func (l *sendLog) load(c *apiclient.Client, dev, kind string, pace time.Duration, mk func() iothub.SendRequest, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(pace): // the load's rate, not synchronisation
			}
			l.send(c, dev, kind, mk())
		}
	}()
	return done
}

// outcome is what the hub says about one message at the end.
type outcome struct {
	msg    *sentMsg
	exists bool
	status iothub.MessageStatus
}

// settle waits (long-polling MessageStatus) until every stored message is terminal and checks
// "every acknowledged message ends in exactly one terminal state".
func (w *world) settle(msgs []*sentMsg, timeout time.Duration) []outcome {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []outcome
	for _, m := range msgs {
		if !m.acked && !m.unknown {
			continue // refused with an error code: never stored (checked separately)
		}
		o := outcome{msg: m}
		for {
			st, err := w.c.MessageStatus(ctx, m.dev, m.mid, 10*time.Second)
			var ie *iothub.Error
			if errors.As(err, &ie) && ie.Code == 404103 {
				if m.acked {
					w.t.Errorf("INVARIANT acknowledged message never lost: %s (201) is unknown to the hub", m.mid)
				}
				break
			}
			if err != nil {
				w.t.Errorf("message status %s: %v", m.mid, err)
				break
			}
			if st.Outcome != "" {
				o.exists, o.status = true, st
				if want := st.Outcome.Terminal(); st.State != want {
					w.t.Errorf("INVARIANT one terminal state: %s has outcome %s but state %s (want %s)", m.mid, st.Outcome, st.State, want)
				}
				break
			}
			if ctx.Err() != nil {
				w.t.Errorf("INVARIANT every acknowledged message ends terminal: %s still %s after %s", m.mid, st.State, timeout)
				break
			}
		}
		out = append(out, o)
	}
	return out
}

// tally adds a test's final outcomes and checked pin moves to the package summary.
func tally(outs []outcome, moves int) {
	totals.Lock()
	defer totals.Unlock()
	for _, o := range outs {
		if o.msg.acked {
			totals.acked++
		} else if o.exists {
			totals.unknown++
		}
	}
	totals.moves += moves
}

// checkFeedback drains every feedback batch and checks one record per stored message that asked
// for one, with the message's outcome, and none for anything else.
func (w *world) checkFeedback(outs []outcome) {
	w.t.Helper()
	ctx := context.Background()
	got := map[string][]iothub.FeedbackRecord{}
	ok := bench.WaitFor(ctx, 60*time.Second, time.Millisecond, func() bool {
		b, err := w.c.ReceiveFeedback(ctx, 500*time.Millisecond)
		if err != nil {
			w.t.Logf("receive feedback: %v", err)
			return false
		}
		if b != nil {
			for _, r := range b.Records {
				got[r.OriginalMessageID] = append(got[r.OriginalMessageID], r)
			}
			if err := w.c.CompleteFeedback(ctx, b.LockToken); err != nil {
				w.t.Errorf("complete feedback %s: %v", b.LockToken, err)
			}
			return false
		}
		st, err := w.c.Status(ctx)
		return err == nil && st.PendingFeedbackCount == 0
	})
	if !ok {
		w.t.Errorf("feedback not drained within 60s")
	}
	for _, v := range feedbackViolations(outs, got) {
		w.t.Error(v)
	}
	n := 0
	for _, o := range outs {
		if o.exists && o.status.Ack == iothub.AckFull {
			n++
		}
	}
	totals.Lock()
	totals.feedback += n
	totals.Unlock()
}

// feedbackViolations: exactly one record per stored full-ack message, with its outcome, and no
// record for anything else.
func feedbackViolations(outs []outcome, got map[string][]iothub.FeedbackRecord) []string {
	var v []string
	want := map[string]outcome{}
	for _, o := range outs {
		if o.exists && o.status.Ack == iothub.AckFull {
			want[o.msg.mid] = o
		}
	}
	for mid, o := range want {
		recs := got[mid]
		if len(recs) != 1 {
			v = append(v, fmt.Sprintf("INVARIANT exactly one feedback record: %s (%s) has %d", mid, o.status.Outcome, len(recs)))
			continue
		}
		if recs[0].StatusCode != o.status.Outcome {
			v = append(v, fmt.Sprintf("feedback for %s says %s, message status says %s", mid, recs[0].StatusCode, o.status.Outcome))
		}
	}
	for mid, recs := range got {
		if _, ok := want[mid]; !ok {
			v = append(v, fmt.Sprintf("INVARIANT no stray feedback: %d record(s) for %s, which no stored full-ack message has", len(recs), mid))
		}
	}
	sort.Strings(v)
	return v
}

// transitions returns the "set" transitions of one output in the agent's sim transition log.
func transitions(t *testing.T, setup bench.AgentSetup, output string) (on, off int) {
	t.Helper()
	ts, err := simhw.ReadTransitions(setup.TransitionLog())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, tr := range ts {
		if tr.Output == output && tr.Cause == simhw.CauseSet {
			if tr.On {
				on++
			} else {
				off++
			}
		}
	}
	return on, off
}

// count tallies outcomes.
func count(outs []outcome) map[iothub.FeedbackStatus]int {
	m := map[iothub.FeedbackStatus]int{}
	for _, o := range outs {
		if o.exists {
			m[o.status.Outcome]++
		}
	}
	return m
}

// randDelay is the fault schedule: a random moment in [lo, hi).
func randDelay(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)))
}

// proxy is a TCP proxy whose connections the test can cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	frozen map[net.Conn]bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, frozen: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && !p.isFrozen(src) {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.frozen[src] {
				// Black hole: the peer on the other side never learns that this side went away.
				src.Close()
				delete(p.conns, src)
				return
			}
			dst.Close()
			src.Close()
			delete(p.conns, dst)
			delete(p.conns, src)
		}
		p.wg.Add(2)
		go pipe(out, in)
		go pipe(in, out)
	}
}

// cut closes every proxied connection (both sides) at once and returns how many pairs it cut.
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns) / 2
	for c := range p.conns {
		c.Close()
	}
	return n
}

// freeze turns every proxied connection into a black hole: bytes are read and dropped in both
// directions and no FIN or RST is passed on, as when a Wi-Fi link dies; only keep-alives can tell.
// New connections are forwarded normally.
func (p *proxy) freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.frozen[c] = true
	}
	return len(p.conns) / 2
}

func (p *proxy) isFrozen(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen[c]
}

func (p *proxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}
