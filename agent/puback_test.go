package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/c2d-project/c2d/internal/testproc"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/c2d-project/c2d/agent"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/simhw"
	"github.com/c2d-project/c2d/internal/sdnotify"
)

// wireEvent is something the device sent, seen by the broker as it read it.
type wireEvent struct {
	Time    time.Time
	Kind    string // "puback" (of a delivery, by its topic) or "publish"
	Topic   string
	Payload string
}

// recorder watches a real embedded MQTT broker (mochi-mqtt) for the device's PUBACKs and
// publishes, so the test can order them against the simulated board's transitions.
type recorder struct {
	mqtt.HookBase
	mu      sync.Mutex
	events  []wireEvent
	sent    map[uint16]string
	changed chan struct{}
}

func (r *recorder) ID() string { return "recorder" }
func (r *recorder) Provides(b byte) bool {
	return b == mqtt.OnPacketRead || b == mqtt.OnPacketSent || b == mqtt.OnQosComplete || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnPacketSent remembers which delivery each packet id carries (OnQosComplete only has the PUBACK).
func (r *recorder) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if cl.ID == deviceID && pk.FixedHeader.Type == packets.Publish {
		r.mu.Lock()
		r.sent[pk.PacketID] = pk.TopicName
		r.mu.Unlock()
	}
}
func (r *recorder) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (r *recorder) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

func (r *recorder) add(e wireEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.ID == deviceID && pk.FixedHeader.Type == packets.Publish {
		r.add(wireEvent{Time: time.Now(), Kind: "publish", Topic: pk.TopicName, Payload: string(pk.Payload)})
	}
	return pk, nil
}

// OnQosComplete runs when the device's PUBACK for a delivery arrives; pk is the delivery.
func (r *recorder) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if cl.ID == deviceID {
		r.mu.Lock()
		topic := r.sent[pk.PacketID]
		r.mu.Unlock()
		r.add(wireEvent{Time: time.Now(), Kind: "puback", Topic: topic})
	}
}

func (r *recorder) wait(t *testing.T, what string, cond func([]wireEvent) bool) []wireEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		evs := append([]wireEvent(nil), r.events...)
		ch := r.changed
		r.mu.Unlock()
		if cond(evs) {
			return evs
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("broker never saw %s; saw %+v", what, evs)
		}
	}
}

func startMochi(t *testing.T) (*mqtt.Server, *recorder, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	rec := &recorder{changed: make(chan struct{}), sent: map[uint16]string{}}
	must(t, srv.AddHook(rec, nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(l))
	must(t, srv.Serve())
	t.Cleanup(func() { srv.Close() })
	return srv, rec, l.Address()
}

// deliver publishes a device-bound message through the broker, QoS 1, as a hub would.
func deliver(t *testing.T, srv *mqtt.Server, m *iothub.Message) string {
	t.Helper()
	topic := iothub.DeviceBoundTopic(deviceID, m)
	must(t, srv.Publish(topic, nil, false, 1))
	return topic
}

func message(mid, lockToken string, props ...string) *iothub.Message {
	m := &iothub.Message{MessageID: mid, LockToken: lockToken}
	for i := 0; i+1 < len(props); i += 2 {
		m.Properties = append(m.Properties, iothub.AppProperty{Name: props[i], Value: props[i+1]})
	}
	return m
}

func find(evs []wireEvent, kind, topicPart string) (wireEvent, bool) {
	for _, e := range evs {
		if e.Kind == kind && strings.Contains(e.Topic, topicPart) {
			return e, true
		}
	}
	return wireEvent{}, false
}

func has(kind, topicPart string) func([]wireEvent) bool {
	return func(evs []wireEvent) bool { _, ok := find(evs, kind, topicPart); return ok }
}

// runWithBoard starts agent.Run on b's config with a board the test can reach (to inject faults),
// and waits for readiness.
func runWithBoard(t *testing.T, b *board) (*simhw.Board, *syncBuffer) {
	t.Helper()
	sock, msgs := testproc.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	var sim *simhw.Board
	opened := make(chan struct{})
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, b.cfg, agent.Options{
			Logger:   slog.New(slog.NewTextHandler(logs, nil)),
			Notifier: sdnotify.FromEnv(),
			OpenBoard: func(cfg *config.Config, _ *slog.Logger) (hw.Board, error) {
				s, err := simhw.OpenBoard(cfg.Specs(), simhw.Options{StateFile: cfg.Hardware.Sim.StateFile, TransitionLog: cfg.Hardware.Sim.TransitionLog})
				sim = s
				close(opened)
				return s, err
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	<-opened
	waitReady(t, msgs)
	return sim, logs
}

// On a plain hub the PUBACK is the completion: it must leave only after the action finished, and
// PUBACKs keep arrival order even when a later, faster action on another output finishes first.
func TestPubackAfterActionAndInOrder(t *testing.T) {
	srv, rec, addr := startMochi(t)
	b := newBoard(t, addr, "")
	runWithBoard(t, b)

	deliver(t, srv, message("p1", "", "target", "relay1", "action", "pulse", "duration", "300ms"))
	deliver(t, srv, message("a1", "", "target", "act", "action", "on"))
	evs := rec.wait(t, "both PUBACKs", func(evs []wireEvent) bool {
		return has("puback", "p1")(evs) && has("puback", "a1")(evs)
	})
	p1, _ := find(evs, "puback", "p1")
	a1, _ := find(evs, "puback", "a1")
	relay := transitions(t, b.logFile, "relay1")
	act := transitions(t, b.logFile, "act")
	if ons(relay) != "on,off" || ons(act) != "on" {
		t.Fatalf("relay1 %s, act %s", ons(relay), ons(act))
	}
	if !act[0].Time.Before(relay[1].Time) {
		t.Errorf("act switched at %v, after the pulse ended at %v: outputs must run concurrently", act[0].Time, relay[1].Time)
	}
	if p1.Time.Before(relay[1].Time) {
		t.Errorf("PUBACK of the pulse at %v, before the pulse ended at %v", p1.Time, relay[1].Time)
	}
	if a1.Time.Before(p1.Time) {
		t.Errorf("PUBACK of a1 (%v) overtook p1's (%v): PUBACKs must keep arrival order", a1.Time, p1.Time)
	}
	for _, e := range evs {
		// Reported properties (the twin) are the agent's own; nothing else is published for completed messages.
		if e.Kind == "publish" && !strings.HasPrefix(e.Topic, "$iothub/twin/") {
			t.Errorf("device published on a plain hub for completed messages: %+v", evs)
		}
	}
}

// Against a hub with the extension, each delivery carries a lock token: the device publishes its
// disposition (with the reason) and only then sends the PUBACK; a transient hardware error is
// abandoned and the redelivery runs.
func TestExtensionDispositions(t *testing.T) {
	srv, rec, addr := startMochi(t)
	b := newBoard(t, addr, "")
	b.cfg.Connection.Dispositions = config.DispositionsExtension
	sim, _ := runWithBoard(t, b)

	prefix := iothub.DispositionPrefix + deviceID + "/messages/devicebound/"
	deliver(t, srv, message("r1", "lt-r1", "target", "relay9", "action", "on"))
	evs := rec.wait(t, "reject disposition and PUBACK", has("puback", "r1"))
	disp, ok := find(evs, "publish", prefix+"lt-r1/reject")
	if !ok {
		t.Fatalf("no reject disposition: %+v", evs)
	}
	var body iothub.DispositionBody
	must(t, json.Unmarshal([]byte(disp.Payload), &body))
	if body.Reason != `unknown target "relay9" (declared: act, relay1, buzzer)` {
		t.Errorf("reason %q", body.Reason)
	}
	if pa, _ := find(evs, "puback", "r1"); pa.Time.Before(disp.Time) {
		t.Error("PUBACK before the disposition")
	}
	if _, ok := find(evs, "publish", "messages/events"); ok {
		t.Error("a reject report event was sent although the hub speaks the extension")
	}

	deliver(t, srv, message("c1", "lt-c1", "target", "relay1", "action", "pulse", "duration", "100ms"))
	evs = rec.wait(t, "complete disposition", has("puback", "c1"))
	comp, ok := find(evs, "publish", prefix+"lt-c1/complete")
	relay := transitions(t, b.logFile, "relay1")
	if !ok || ons(relay) != "on,off" || comp.Time.Before(relay[1].Time) {
		t.Errorf("complete %+v (ok %v) vs relay1 %v: the disposition must follow the pulse's end", comp, ok, relay)
	}

	// complete_on: start — buzzer's pulse completes as soon as it switched on.
	deliver(t, srv, message("s1", "lt-s1", "target", "buzzer", "action", "pulse", "duration", "2s"))
	evs = rec.wait(t, "early complete", has("puback", "s1"))
	early, _ := find(evs, "publish", prefix+"lt-s1/complete")
	buzz := transitions(t, b.logFile, "buzzer")
	if len(buzz) != 1 || !buzz[0].On || early.Time.Before(buzz[0].Time) {
		t.Errorf("buzzer %v, complete at %v: want completion after switching on, before the pulse ends", buzz, early.Time)
	}

	sim.FailNext("act", 1)
	deliver(t, srv, message("t1", "lt-t1", "target", "act", "action", "on"))
	evs = rec.wait(t, "abandon", has("publish", prefix+"lt-t1/abandon"))
	if n := len(transitions(t, b.logFile, "act")); n != 0 {
		t.Errorf("act moved %d times on a failed write", n)
	}
	deliver(t, srv, message("t1", "lt-t1b", "target", "act", "action", "on")) // the hub redelivers
	rec.wait(t, "redelivery completed", has("publish", prefix+"lt-t1b/complete"))
	if got := ons(transitions(t, b.logFile, "act")); got != "on" {
		t.Errorf("act went %s after the redelivery of the abandoned message", got)
	}
	_ = evs
}

// The connection drops while a pulse runs: the pulse keeps its deadline (it is in-process), the
// agent reconnects with its persistent session, the broker redelivers the unacknowledged message,
// and the redelivery is settled by the running execution — the relay moves once.
func TestPulseSurvivesReconnect(t *testing.T) {
	srv, rec, addr := startMochi(t)
	b := newBoard(t, addr, "")
	_, logs := runWithBoard(t, b)

	deliver(t, srv, message("p1", "", "target", "relay1", "action", "pulse", "duration", "700ms"))
	waitState(t, b.stateFile, "relay1 on", func(s simhw.State) bool { return s.Outputs["relay1"].On })
	cl, ok := srv.Clients.Get(deviceID)
	if !ok {
		t.Fatal("device not connected")
	}
	cl.Stop(errors.New("test: network drop"))
	evs := rec.wait(t, "PUBACK of p1 on the new connection", has("puback", "p1"))
	relay := transitions(t, b.logFile, "relay1")
	if ons(relay) != "on,off" {
		t.Fatalf("relay1 went %s: the pulse must run exactly once", ons(relay))
	}
	if held := relay[1].Time.Sub(relay[0].Time); held < 700*time.Millisecond || held > 700*time.Millisecond+time.Second {
		t.Errorf("pulse held %v across the reconnect, want 700ms", held)
	}
	if pa, _ := find(evs, "puback", "p1"); pa.Time.Before(relay[1].Time) {
		t.Error("PUBACK before the pulse ended")
	}
	for _, want := range []string{"connection lost", "redelivered while running"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("agent log lacks %q", want)
		}
	}
}

// On a plain hub a transient hardware error cannot be abandoned: the delivery stays
// unacknowledged (later ones are still acknowledged, in order), and the broker's redelivery after
// a reconnect runs it.
func TestPlainHubTransientErrorLeftUnacknowledged(t *testing.T) {
	srv, rec, addr := startMochi(t)
	b := newBoard(t, addr, "")
	sim, logs := runWithBoard(t, b)

	sim.FailNext("act", 1)
	deliver(t, srv, message("t1", "", "target", "act", "action", "on"))
	deliver(t, srv, message("n1", "", "target", "relay1", "action", "on"))
	evs := rec.wait(t, "PUBACK of n1", has("puback", "n1"))
	waitLog(t, logs, "this hub cannot abandon over MQTT", 1)
	if _, ok := find(evs, "puback", "t1"); ok {
		t.Fatal("the failed message was acknowledged (= completed on a plain hub)")
	}
	if n := len(transitions(t, b.logFile, "act")); n != 0 {
		t.Fatalf("act moved %d times", n)
	}
	cl, _ := srv.Clients.Get(deviceID)
	cl.Stop(errors.New("test: reconnect"))
	rec.wait(t, "PUBACK of the redelivered t1", has("puback", "t1"))
	if got := ons(transitions(t, b.logFile, "act")); got != "on" {
		t.Errorf("act went %s after the redelivery", got)
	}
}

// $.exp is checked on arrival and again when the action would start: a message that expires while
// queued behind a long action on its output is refused, not run late. A sender reusing a message id
// for different content gets a new execution.
func TestExpiryRecheckedAndReusedIDs(t *testing.T) {
	srv, rec, addr := startMochi(t)
	b := newBoard(t, addr, "")
	b.cfg.Connection.Dispositions = config.DispositionsExtension
	runWithBoard(t, b)
	prefix := iothub.DispositionPrefix + deviceID + "/messages/devicebound/"

	deliver(t, srv, message("long", "lt-long", "target", "relay1", "action", "pulse", "duration", "400ms"))
	late := message("late", "lt-late", "target", "relay1", "action", "off")
	late.ExpiryTime = time.Now().Add(150 * time.Millisecond)
	deliver(t, srv, late)
	evs := rec.wait(t, "late settled", has("publish", prefix+"lt-late/"))
	d, _ := find(evs, "publish", prefix+"lt-late/")
	var body iothub.DispositionBody
	must(t, json.Unmarshal([]byte(d.Payload), &body))
	want := "message expired at " + late.ExpiryTime.UTC().Format(time.RFC3339)
	if !strings.HasSuffix(d.Topic, "/reject") || body.Reason != want {
		t.Errorf("late message: %s %q, want reject %q", d.Topic, body.Reason, want)
	}
	if got := ons(transitions(t, b.logFile, "relay1")); got != "on,off" {
		t.Errorf("relay1 went %s: only the pulse may have run", got)
	}

	// toggles show a second run: a redelivery that ran again would switch act back on.
	deliver(t, srv, message("same", "lt-a", "target", "act", "action", "toggle"))
	rec.wait(t, "first 'same'", has("publish", prefix+"lt-a/complete"))
	deliver(t, srv, message("same", "lt-b", "target", "act", "action", "toggle", "x-note", "again")) // reused id, new content
	rec.wait(t, "second 'same'", has("publish", prefix+"lt-b/complete"))
	deliver(t, srv, message("same", "lt-c", "target", "act", "action", "toggle", "x-note", "again")) // a true redelivery
	rec.wait(t, "redelivered 'same'", has("publish", prefix+"lt-c/complete"))
	if got := ons(transitions(t, b.logFile, "act")); got != "on,off" {
		t.Errorf("act went %s", got)
	}
}
