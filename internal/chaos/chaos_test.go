package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/bench"
)

var toggleOut = []bench.AgentOutput{{Name: "out1", Pin: "GPIO17", Actions: []string{"on", "off", "toggle", "pulse"}}}

func toggleReq() iothub.SendRequest {
	return iothub.SendRequest{Ack: iothub.AckFull, Properties: props("out1", "toggle")}
}

// checkToggles: one toggle transition per completed toggle, and nothing but Success. It returns
// the number of transitions checked.
func checkToggles(t *testing.T, outs []outcome, setup bench.AgentSetup) int {
	t.Helper()
	on, off := transitions(t, setup, "out1")
	for _, v := range toggleViolations(outs, on, off) {
		t.Error(v)
	}
	return on + off
}

func toggleViolations(outs []outcome, on, off int) []string {
	var v []string
	c := count(outs)
	for _, st := range []iothub.FeedbackStatus{iothub.StatusExpired, iothub.StatusDeliveryCountExceeded, iothub.StatusRejected, iothub.StatusPurged} {
		if c[st] > 0 {
			v = append(v, fmt.Sprintf("%d toggle(s) ended %s; want every one Success (no fault here may refuse a toggle)", c[st], st))
		}
	}
	if on+off != c[iothub.StatusSuccess] {
		v = append(v, fmt.Sprintf("INVARIANT no message moves a pin twice: %d toggle transitions (%d on, %d off) for %d completed toggles",
			on+off, on, off, c[iothub.StatusSuccess]))
	}
	return v
}

// pulseViolations: every pulse ends Success or Rejected as interrupted (kill -9 mid-pulse), and the
// pulses started lie between the completed and the completed + interrupted ones.
func pulseViolations(outs []outcome, on, off int) (v []string, interrupted int) {
	c := count(outs)
	for _, o := range outs {
		switch {
		case !o.exists:
		case o.status.Outcome == iothub.StatusSuccess:
		case o.status.Outcome == iothub.StatusRejected && strings.Contains(o.status.Reason, "interrupted"):
			interrupted++
		default:
			v = append(v, fmt.Sprintf("%s ended %s (%q); want Success, or Rejected as interrupted", o.msg.mid, o.status.Outcome, o.status.Reason))
		}
	}
	if on < c[iothub.StatusSuccess] || on > c[iothub.StatusSuccess]+interrupted {
		v = append(v, fmt.Sprintf("INVARIANT no message moves a pin twice: %d pulses started for %d completed + %d interrupted pulses",
			on, c[iothub.StatusSuccess], interrupted))
	}
	if off > on {
		v = append(v, fmt.Sprintf("%d relay off transitions for %d on", off, on))
	}
	return v, interrupted
}

// TestChaosHubKill kills the hub with SIGKILL at random moments while toggles flow, restarts it on
// the same data directory and ports, and checks every invariant at the end.
func TestChaosHubKill(t *testing.T) {
	w := newWorld(t, 1000)
	w.register("pi-hubkill")
	_, setup := w.agent("pi-hubkill", w.hub.Endpoints.MQTT, toggleOut)
	var log sendLog
	stop := make(chan struct{})
	d1 := log.load(w.c, "pi-hubkill", "toggle", 15*time.Millisecond, toggleReq, stop)
	d2 := log.load(w.c, "pi-hubkill", "toggle", 15*time.Millisecond, toggleReq, stop)
	n := faults(3, 100)
	var worst time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(randDelay(200*time.Millisecond, 1500*time.Millisecond)) // fault schedule
		killed := time.Now()
		w.hub.Kill()
		countFault("hub kill -9")
		if err := w.hub.Start(context.Background()); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		worst = max(worst, w.waitConnected("pi-hubkill", killed, setup.ReconnectBound()+reconnectAllowance))
	}
	close(stop)
	<-d1
	<-d2
	outs := w.settle(log.all(), 90*time.Second)
	w.checkFeedback(outs)
	tally(outs, checkToggles(t, outs, setup))
	t.Logf("summary: %d hub kill -9, %d sends (%d acknowledged; refused: %s), %d completed toggles, agent back within %s at worst (bound %s)",
		n, len(log.all()), acked(log.all()), refusals(log.all()), count(outs)[iothub.StatusSuccess], worst.Round(time.Millisecond), setup.ReconnectBound()+reconnectAllowance)
}

func acked(ms []*sentMsg) int {
	n := 0
	for _, m := range ms {
		if m.acked {
			n++
		}
	}
	return n
}

// TestChaosAgentKill kills the agent with SIGKILL in the middle of pulses and restarts it: a pulse
// that was cut short is rejected as interrupted and never run again.
func TestChaosAgentKill(t *testing.T) {
	w := newWorld(t, 1000)
	w.register("pi-agentkill")
	outs := []bench.AgentOutput{{Name: "relay", Pin: "GPIO22", Actions: []string{"pulse"}, MaxDuration: 5 * time.Second}}
	ag, setup := w.agent("pi-agentkill", w.hub.Endpoints.MQTT, outs)
	var log sendLog
	stop := make(chan struct{})
	pulse := func() iothub.SendRequest {
		return iothub.SendRequest{Ack: iothub.AckFull, Properties: props("relay", "pulse", iothub.AppProperty{Name: "duration", Value: "150ms"})}
	}
	d := log.load(w.c, "pi-agentkill", "pulse", 120*time.Millisecond, pulse, stop)
	n := faults(3, 100)
	var worst time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(randDelay(300*time.Millisecond, 1200*time.Millisecond)) // fault schedule
		killed := time.Now()
		ag.Kill()
		countFault("agent kill -9")
		var err error
		ag, err = bench.StartAgent(context.Background(), agentBin, setup)
		if err != nil {
			dumpLog(t, setup.LogPath())
			t.Fatalf("restart agent %d: %v", i, err)
		}
		worst = max(worst, w.waitConnected("pi-agentkill", killed, setup.ReconnectBound()+reconnectAllowance))
	}
	close(stop)
	<-d
	t.Cleanup(func() { ag.Stop(10 * time.Second) })
	res := w.settle(log.all(), 90*time.Second)
	w.checkFeedback(res)
	c := count(res)
	on, off := transitions(t, setup, "relay")
	vs, interrupted := pulseViolations(res, on, off)
	for _, v := range vs {
		t.Error(v)
	}
	tally(res, on+off)
	t.Logf("summary: %d agent kill -9, %d sends (%d acknowledged), %d pulses completed, %d interrupted and rejected, %d pulses started; agent back within %s at worst",
		n, len(log.all()), acked(log.all()), c[iothub.StatusSuccess], interrupted, on, worst.Round(time.Millisecond))
}

// TestChaosConnectionCut cuts the agent's TCP connection (a proxy between agent and hub drops both
// sides) at random moments mid-stream, and restarts the hub gracefully now and then.
func TestChaosConnectionCut(t *testing.T) {
	w := newWorld(t, 1000)
	w.register("pi-cut")
	px := newProxy(t, w.hub.Endpoints.MQTT)
	_, setup := w.agent("pi-cut", px.addr(), toggleOut)
	var log sendLog
	stop := make(chan struct{})
	d := log.load(w.c, "pi-cut", "toggle", 10*time.Millisecond, toggleReq, stop)
	n := faults(4, 100)
	var worst time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(randDelay(150*time.Millisecond, 1000*time.Millisecond)) // fault schedule
		at := time.Now()
		if i%4 == 3 {
			w.hub.Stop()
			countFault("hub graceful restart")
			if err := w.hub.Start(context.Background()); err != nil {
				t.Fatalf("restart %d: %v", i, err)
			}
		} else {
			if px.cut() == 0 {
				t.Logf("cut %d: no connection was up", i)
			}
			countFault("connection cut")
		}
		worst = max(worst, w.waitConnected("pi-cut", at, setup.ReconnectBound()+reconnectAllowance))
	}
	close(stop)
	<-d
	outs := w.settle(log.all(), 90*time.Second)
	w.checkFeedback(outs)
	tally(outs, checkToggles(t, outs, setup))
	t.Logf("summary: %d connection faults, %d sends (%d acknowledged; refused: %s), %d completed toggles, agent back within %s at worst",
		n, len(log.all()), acked(log.all()), refusals(log.all()), count(outs)[iothub.StatusSuccess], worst.Round(time.Millisecond))
}

// TestChaosPartition black-holes the agent's connection (packets dropped, no FIN or RST) mid-stream:
// only MQTT keep-alives can tell. The agent must notice, reconnect, and lose or repeat nothing.
func TestChaosPartition(t *testing.T) {
	w := newWorld(t, 1000)
	w.register("pi-partition")
	px := newProxy(t, w.hub.Endpoints.MQTT)
	const keepAlive = 5 * time.Second
	_, setup := w.agentWith(bench.AgentSetup{DeviceID: "pi-partition", MQTTAddr: px.addr(), Outputs: toggleOut, KeepAlive: keepAlive})
	var log sendLog
	stop := make(chan struct{})
	d := log.load(w.c, "pi-partition", "toggle", 20*time.Millisecond, toggleReq, stop)
	// The agent pings once keep_alive passes without traffic (paho checks at keep_alive
	// granularity: up to 2 × keep_alive) and gives up 10 s (its ping timeout) later.
	bound := 2*keepAlive + 10*time.Second + setup.ReconnectBound() + reconnectAllowance
	n := faults(1, 10)
	var worst time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(randDelay(200*time.Millisecond, 1000*time.Millisecond)) // fault schedule
		at := time.Now()
		if px.freeze() == 0 {
			t.Logf("partition %d: no connection was up", i)
		}
		countFault("partition (black hole)")
		worst = max(worst, w.waitConnected("pi-partition", at, bound))
	}
	close(stop)
	<-d
	outs := w.settle(log.all(), 90*time.Second)
	w.checkFeedback(outs)
	tally(outs, checkToggles(t, outs, setup))
	t.Logf("summary: %d partitions, %d sends (%d acknowledged; refused: %s), %d completed toggles, agent back within %s at worst (bound %s)",
		n, len(log.all()), acked(log.all()), refusals(log.all()), count(outs)[iothub.StatusSuccess], worst.Round(time.Millisecond), bound)
}

// TestChaosQueueFullAndExpiry fills an offline device's queue past its limit (the overflow gets
// 403004 and nothing else is lost), and lets messages expire while another device is offline
// (Expired, feedback once, and nothing moves when the device comes back).
func TestChaosQueueFullAndExpiry(t *testing.T) {
	const depth = 5
	w := newWorld(t, depth)
	w.register("pi-full", "pi-expire")
	var log sendLog
	rounds := faults(1, 10)
	var accepted, refused, expiring int
	for r := 0; r < rounds; r++ {
		// Fill pi-full past its limit while it is offline.
		for i := 0; i < depth+3; i++ {
			m := log.send(w.c, "pi-full", "toggle", toggleReq())
			switch {
			case i < depth && !m.acked:
				t.Fatalf("send %d of %d to an offline device with room: not acknowledged (code %d)", i+1, depth, m.code)
			case i >= depth && m.code != 403004:
				t.Errorf("overflow send %d: acked=%v code %d; want 403004 DeviceMaximumQueueDepthExceeded", i+1, m.acked, m.code)
			}
			if m.acked {
				accepted++
			} else {
				refused++
				countFault("queue overflow (403004)")
			}
		}
		// Messages for pi-expire that expire in 1.3 s while it is offline.
		for i := 0; i < 3; i++ {
			exp := time.Now().Add(1300 * time.Millisecond) // min_ttl 1s, plus headroom for a slow request
			m := log.send(w.c, "pi-expire", "toggle", iothub.SendRequest{Ack: iothub.AckFull, ExpiryTimeUTC: &exp, Properties: props("out1", "toggle")})
			if !m.acked {
				t.Fatalf("send with 1s expiry: not acknowledged (code %d)", m.code)
			}
			expiring++
			countFault("expired while offline")
		}
		expOuts := w.settle(filter(log.all(), "pi-expire"), 60*time.Second)
		for _, o := range expOuts {
			if o.status.Outcome != iothub.StatusExpired {
				t.Errorf("%s: %s, want Expired", o.msg.mid, o.status.Outcome)
			}
		}
		// Bring pi-full online: exactly the accepted ones run, then take it offline again.
		ag, setup := w.agent("pi-full", w.hub.Endpoints.MQTT, toggleOut)
		fullOuts := w.settle(filter(log.all(), "pi-full"), 60*time.Second)
		ag.Stop(10 * time.Second)
		moves := checkToggles(t, fullOuts, setup)
		if r == rounds-1 {
			tally(nil, moves)
		}
	}
	// The refused sends were never stored.
	for _, m := range log.all() {
		if m.code == 403004 {
			_, err := w.c.MessageStatus(context.Background(), m.dev, m.mid, 0)
			var ie *iothub.Error
			if !errors.As(err, &ie) || ie.Code != 404103 {
				t.Errorf("INVARIANT refused send %s stored anyway: status err %v", m.mid, err)
			}
		}
	}
	// pi-expire comes online: nothing moves.
	_, setup := w.agent("pi-expire", w.hub.Endpoints.MQTT, toggleOut)
	all := w.settle(log.all(), 60*time.Second)
	w.checkFeedback(all)
	if on, off := transitions(t, setup, "out1"); on+off != 0 {
		t.Errorf("INVARIANT expired messages never run: %d transitions on pi-expire", on+off)
	}
	tally(all, 0)
	c := count(all)
	if c[iothub.StatusSuccess] != accepted || c[iothub.StatusExpired] != expiring {
		t.Errorf("outcomes %v; want %d Success and %d Expired", c, accepted, expiring)
	}
	t.Logf("summary: %d rounds, %d accepted and completed, %d refused with 403004, %d expired while offline", rounds, accepted, refused, expiring)
}

func filter(ms []*sentMsg, dev string) []*sentMsg {
	var out []*sentMsg
	for _, m := range ms {
		if m.dev == dev {
			out = append(out, m)
		}
	}
	return out
}

// effectViolations checks messages that may be cut by an agent fault: each ends Success, or
// Rejected as interrupted (kill -9: never run again) or cut short (SIGTERM: outputs returned to
// safe); the actions started (moves) lie between the completed ones and completed + cut ones.
func effectViolations(outs []outcome, moves int, what string) (v []string, success, cut int) {
	for _, o := range outs {
		switch {
		case !o.exists:
		case o.status.Outcome == iothub.StatusSuccess:
			success++
		case o.status.Outcome == iothub.StatusRejected &&
			(strings.Contains(o.status.Reason, "interrupted") || strings.Contains(o.status.Reason, "cut short")):
			cut++
		default:
			v = append(v, fmt.Sprintf("%s %s ended %s (%q); want Success, or Rejected as interrupted/cut short", what, o.msg.mid, o.status.Outcome, o.status.Reason))
		}
	}
	if moves < success || moves > success+cut {
		v = append(v, fmt.Sprintf("INVARIANT no message moves a pin twice: %d %s moves for %d completed + %d interrupted or cut short",
			moves, what, success, cut))
	}
	return v, success, cut
}

// TestChaosMixed cycles through every fault — hub kill -9, agent kill -9, connection cut, graceful
// hub restart, agent SIGTERM — while toggles and pulses run on two outputs of one board, with the
// agent using c2d's disposition extension.
func TestChaosMixed(t *testing.T) { mixed(t, "extension") }

// TestChaosMixedAzureDialect is TestChaosMixed with the agent in Azure's dialect
// (connection.dispositions: azure): the PUBACK, sent once the action is over, completes the message.
func TestChaosMixedAzureDialect(t *testing.T) { mixed(t, "azure") }

func mixed(t *testing.T, dispositions string) {
	w := newWorld(t, 1000)
	w.register("pi-mixed")
	px := newProxy(t, w.hub.Endpoints.MQTT)
	outputs := []bench.AgentOutput{
		{Name: "out1", Pin: "GPIO17", Actions: []string{"toggle"}},
		{Name: "relay", Pin: "GPIO22", Actions: []string{"pulse"}, MaxDuration: 5 * time.Second},
	}
	ag, setup := w.agentWith(bench.AgentSetup{DeviceID: "pi-mixed", MQTTAddr: px.addr(), Outputs: outputs, Dispositions: dispositions})
	var log sendLog
	stop := make(chan struct{})
	pulse := func() iothub.SendRequest {
		return iothub.SendRequest{Ack: iothub.AckFull, Properties: props("relay", "pulse", iothub.AppProperty{Name: "duration", Value: "250ms"})}
	}
	d1 := log.load(w.c, "pi-mixed", "toggle", 20*time.Millisecond, toggleReq, stop)
	d2 := log.load(w.c, "pi-mixed", "pulse", 300*time.Millisecond, pulse, stop)
	n := faults(5, 100)
	if dispositions == "azure" {
		n = faults(5, 50)
	}
	bound := setup.ReconnectBound() + reconnectAllowance
	var worst time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(randDelay(200*time.Millisecond, 1200*time.Millisecond)) // fault schedule
		at := time.Now()
		switch i % 5 {
		case 0:
			w.hub.Kill()
			countFault("hub kill -9")
			if err := w.hub.Start(context.Background()); err != nil {
				t.Fatalf("restart hub: %v", err)
			}
		case 1, 4:
			if i%5 == 1 {
				ag.Kill()
				countFault("agent kill -9")
			} else {
				ag.Stop(10 * time.Second)
				countFault("agent SIGTERM")
			}
			var err error
			if ag, err = bench.StartAgent(context.Background(), agentBin, setup); err != nil {
				dumpLog(t, setup.LogPath())
				t.Fatalf("restart agent: %v", err)
			}
		case 2:
			px.cut()
			countFault("connection cut")
		case 3:
			w.hub.Stop()
			countFault("hub graceful restart")
			if err := w.hub.Start(context.Background()); err != nil {
				t.Fatalf("restart hub: %v", err)
			}
		}
		worst = max(worst, w.waitConnected("pi-mixed", at, bound))
	}
	close(stop)
	<-d1
	<-d2
	t.Cleanup(func() { ag.Stop(10 * time.Second) })
	all := log.all()
	res := w.settle(all, 90*time.Second)
	w.checkFeedback(res)
	if dispositions == "azure" {
		// In Azure's dialect a refusal is a PUBACK (Success to the hub) plus a D2C reject report
		// (docs/protocol.md §7): take the refusals from the agent's own log.
		res = withAgentRejections(t, res, setup.LogPath())
	}
	var toggles, pulses []outcome
	for _, o := range res {
		if o.msg.kind == "toggle" {
			toggles = append(toggles, o)
		} else {
			pulses = append(pulses, o)
		}
	}
	ton, toff := transitions(t, setup, "out1")
	pon, _ := transitions(t, setup, "relay")
	vt, ts, tc := effectViolations(toggles, ton+toff, "toggle")
	vp, ps, pc := effectViolations(pulses, pon, "pulse")
	for _, v := range append(vt, vp...) {
		t.Error(v)
	}
	tally(res, ton+toff+pon)
	t.Logf("summary (%s): %d mixed faults, %d sends (%d acknowledged); toggles %d completed, %d cut, %d moves; pulses %d completed, %d cut, %d started; agent back within %s at worst",
		dispositions, n, len(all), acked(all), ts, tc, ton+toff, ps, pc, pon, worst.Round(time.Millisecond))
}

var rejectedLine = regexp.MustCompile(`msg=rejected mid=(\S+) reason=("(?:[^"\\]|\\.)*"|\S+)`)

// withAgentRejections returns outs with every Success the agent's log says it refused turned into
// Rejected with the agent's reason (only for checking: the hub's answer stays Success).
func withAgentRejections(t *testing.T, outs []outcome, logPath string) []outcome {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	rej := map[string]string{}
	for _, m := range rejectedLine.FindAllStringSubmatch(string(b), -1) {
		reason := m[2]
		if uq, err := strconv.Unquote(reason); err == nil {
			reason = uq
		}
		rej[m[1]] = reason
	}
	out := make([]outcome, len(outs))
	for i, o := range outs {
		if r, ok := rej[o.msg.mid]; ok && o.exists && o.status.Outcome == iothub.StatusSuccess {
			o.status.Outcome, o.status.Reason = iothub.StatusRejected, r
		}
		out[i] = o
	}
	return out
}
