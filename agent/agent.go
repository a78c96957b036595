package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/agent/conn"
	"github.com/c2d-project/c2d/agent/dispatch"
	"github.com/c2d-project/c2d/agent/ledger"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/periphhw"
	"github.com/c2d-project/c2d/hw/simhw"
	"github.com/c2d-project/c2d/internal/sdnotify"
	"github.com/c2d-project/c2d/internal/version"
)

// Options are Run's dependencies; the zero value is what the binary uses.
type Options struct {
	Logger   *slog.Logger
	Notifier *sdnotify.Notifier
	// OpenBoard opens the hardware; nil opens the config's backend (OpenBoard).
	OpenBoard func(cfg *config.Config, log *slog.Logger) (hw.Board, error)
	// OpenInputs opens the config's inputs beside the opened board; nil opens the config's
	// backend (OpenInputs).
	OpenInputs func(cfg *config.Config, log *slog.Logger, board hw.Board) (hw.Inputs, error)
	// ShutdownGrace bounds how long shutdown waits for dispositions and PUBACKs of messages
	// settled while stopping (default 3s).
	ShutdownGrace time.Duration
}

// OpenBoard opens the config's hardware backend; every output is in its safe state when it returns.
// An output's failure names it by its config path: `outputs.relay1.pin: no line "GPIO99" (...)`.
func OpenBoard(cfg *config.Config, log *slog.Logger) (hw.Board, error) {
	specs := cfg.Specs()
	var b hw.Board
	var err error
	switch cfg.Hardware.Backend {
	case config.BackendSim:
		b, err = simhw.Open(specs, simhw.Options{StateFile: cfg.Hardware.Sim.StateFile, TransitionLog: cfg.Hardware.Sim.TransitionLog})
	default:
		b, err = periphhw.Open(specs, periphhw.Options{Logger: log})
	}
	if oe, ok := err.(*hw.OutputError); ok {
		err = fmt.Errorf("outputs.%w", oe)
	}
	return b, err
}

// Run runs the agent until ctx ends (SIGTERM), then stops receiving, cuts running actions short,
// drives every output to its safe state, disconnects and returns nil. An error means it could not
// start (bad connection string file, hardware that does not open, unwritable state directory).
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Notifier == nil {
		opts.Notifier = sdnotify.FromEnv()
	}
	if opts.OpenBoard == nil {
		opts.OpenBoard = OpenBoard
	}
	if opts.OpenInputs == nil {
		opts.OpenInputs = OpenInputs
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 3 * time.Second
	}
	res, err := cfg.Resolve()
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		log.Warn(w)
	}

	unlock, err := lockStateDir(res.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	ledgerPath := filepath.Join(res.StateDir, ledger.FileName)
	led, err := ledger.Open(ledgerPath, ledger.Options{MaxIDs: cfg.ExecutedIDs, Logger: log})
	if err != nil {
		return fmt.Errorf("state_dir %s: %w", res.StateDir, err)
	}
	defer led.Close()

	_ = opts.Notifier.Status("opening hardware")
	board, err := opts.OpenBoard(cfg, log)
	if err != nil {
		return fmt.Errorf("open hardware (%s): %w", cfg.Hardware.Backend, err)
	}
	safe := map[string]bool{}
	for _, s := range cfg.Specs() {
		safe[s.Name] = s.Safe
	}
	inputs, err := opts.OpenInputs(cfg, log, board)
	if err != nil {
		_ = board.Close()
		return fmt.Errorf("open hardware (%s): %w", cfg.Hardware.Backend, err)
	}
	defer inputs.Close()
	log.Info("hardware ready: outputs in their safe state", "backend", cfg.Hardware.Backend, "outputs", strings.Join(board.Names(), ","),
		"inputs", strings.Join(inputs.Names(), ","))
	since := &sinceBoard{Board: board, at: map[string]time.Time{}}
	board = since

	a := &agent{
		cfg: cfg, log: log, ledger: led, board: board, inputs: inputs, catalog: cfg.Catalog(), notifier: opts.Notifier,
		inflight: map[string]*execution{},
		deviceID: res.Device.DeviceID, version: version.Version, configHash: configHash(cfg), started: time.Now(), since: since,
		statusKick: make(chan struct{}, 1),
	}
	statusStop := make(chan struct{})
	defer close(statusStop)
	if a.notifier.Enabled() {
		go a.statusLoop(statusStop)
	}
	a.methods = newMethods(a)
	a.reporter = newReporter(a)
	var followers []string
	for _, n := range cfg.OutputOrder {
		if cfg.Outputs[n].Desired {
			followers = append(followers, n)
		}
	}
	a.follower = newFollower(a, followers)
	since.changed = a.reporter.changed
	inputs.Notify(a.inputChanged)
	a.dispatcher = dispatch.New(board, safe, log)
	a.intake = newQueue(maxIntake)
	var fullLogged time.Time
	a.intake.onFull = func(*conn.Delivery) {
		// Called from paho's handler only, one at a time; one line per 10 s at most.
		if time.Since(fullLogged) >= 10*time.Second {
			fullLogged = time.Now()
			log.Warn("inbound queue full; leaving messages with the broker (redelivered later)", "limit", maxIntake)
		}
	}

	firstConnect := make(chan struct{})
	var once sync.Once
	client, err := conn.New(conn.Options{
		Device: res.Device, BrokerURL: res.BrokerURL, Fallbacks: res.Fallbacks, TLS: res.TLS, Extension: res.Extension,
		ClientType:     "c2d-agent/" + version.Version,
		KeepAlive:      cfg.Connection.KeepAlive.Duration,
		TokenTTL:       cfg.Connection.TokenTTL.Duration,
		ConnectTimeout: cfg.Connection.ConnectTimeout.Duration,
		ReconnectMin:   cfg.Connection.ReconnectMin.Duration,
		ReconnectMax:   cfg.Connection.ReconnectMax.Duration,
		Logger:         log,
		Deliver:        a.intake.push,
		Method:         a.methods.push,
		Twin:           true,
		Desired:        a.follower.notified,
		OnState: func(s conn.State) {
			a.setConn(s)
			if s.Connected {
				a.reporter.connected()
				a.follower.connected()
				once.Do(func() { close(firstConnect) })
			}
		},
	})
	if err != nil {
		_ = board.Close()
		return err
	}
	a.client = client
	a.intake.drop = client.Drop

	intakeDone := make(chan struct{})
	go func() {
		defer close(intakeDone)
		for {
			d, ok := a.intake.pop()
			if !ok {
				return
			}
			a.handle(d)
		}
	}()

	methodsStop, methodsDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(methodsDone); a.methods.run(methodsStop) }()
	go a.reporter.run(methodsStop) // bounded by reportTimeout; not waited for

	connCtx, stopConn := context.WithCancel(context.Background())
	connDone := make(chan error, 1)
	go func() { connDone <- client.Run(connCtx) }()

	// Readiness: hardware is safe now; wait (bounded) for the first connection, so "started" means
	// "reachable" when the network is there, and a board that boots offline still starts.
	go func() {
		t := time.NewTimer(cfg.ReadyTimeout.Duration)
		defer t.Stop()
		select {
		case <-firstConnect:
		case <-t.C:
			log.Warn("not connected yet; reporting ready anyway and retrying in the background", "waited", cfg.ReadyTimeout.String())
		case <-ctx.Done():
			return
		}
		_ = opts.Notifier.Ready(a.status())
	}()
	if iv := sdnotify.WatchdogInterval(); iv > 0 {
		go a.watchdog(ctx, iv)
	}

	<-ctx.Done()
	log.Info("stopping: no new messages; cutting running actions short")
	_ = opts.Notifier.Stopping()
	a.intake.close() // deliveries still arriving are dropped unacknowledged: redelivered next start
	<-intakeDone
	close(methodsStop) // calls not yet taken are not answered: the hub times them out
	<-methodsDone
	a.dispatcher.Shutdown() // running jobs → safe state and settled; queued ones dropped
	if !client.Flush(opts.ShutdownGrace) {
		log.Warn("some dispositions were not sent before stopping; those messages will be redelivered and settled from the executed-id log")
	}
	stopConn()
	<-connDone
	if err := board.Close(); err != nil {
		log.Error("closing hardware", "err", err)
	} else {
		log.Info("outputs in their safe state; stopped")
	}
	return nil
}

type agent struct {
	cfg        *config.Config
	log        *slog.Logger
	ledger     *ledger.Ledger
	board      hw.Board
	inputs     hw.Inputs
	catalog    *action.Catalog
	dispatcher *dispatch.Dispatcher
	client     *conn.Client
	notifier   *sdnotify.Notifier
	intake     *queue

	mu        sync.Mutex
	inflight  map[string]*execution // message id → running execution
	connState conn.State
	completed int
	rejected  int
	lastErr   string
	lastHint  string // conn.State.Hint of the last failed attempt, until connected

	// for the state method and the twin
	deviceID, version, configHash string
	started                       time.Time
	since                         *sinceBoard
	recent                        recentCommands
	methods                       *methods
	reporter                      *reporter
	follower                      *follower
	changes                       changeLog     // input change log lines, bounded
	statusKick                    chan struct{} // updateStatus → statusLoop (cap 1: updates coalesce)
}

// execution is one message being run; redeliveries that arrive meanwhile attach to it.
type execution struct {
	id, fp     string
	what       string // the plan, for the state method's last commands
	deliveries []*conn.Delivery
	settled    bool
	disp       iothub.Disposition
	reason     string
}

func (a *agent) handle(d *conn.Delivery) {
	if d.ParseErr != nil {
		reason := "malformed message: " + d.ParseErr.Error()
		a.log.Warn("rejecting delivery", "topic", d.Topic, "reason", reason)
		a.count(iothub.DispositionReject, reason)
		a.client.Settle(d, iothub.DispositionReject, reason)
		return
	}
	m := d.Message
	id, fp := m.MessageID, Fingerprint(m)
	log := a.log.With("mid", id)
	if id == "" {
		log.Warn("message has no $.mid: a redelivery of it cannot be recognised")
	} else {
		a.mu.Lock()
		if ex := a.inflight[id]; ex != nil && ex.fp == fp {
			if ex.settled {
				disp, reason := ex.disp, ex.reason
				a.mu.Unlock()
				log.Info("redelivered while running; already settled", "disposition", disp)
				a.client.Settle(d, disp, reason)
				return
			}
			ex.deliveries = append(ex.deliveries, d)
			a.mu.Unlock()
			log.Info("redelivered while running: it will be settled when the running execution ends")
			return
		}
		a.mu.Unlock()
		if e, ok := a.ledger.Lookup(id); ok {
			if e.Fingerprint == fp {
				a.settleFromLedger(d, e, log)
				return
			}
			log.Warn("message id reused with different properties: treating it as a new message")
		}
	}

	plan, err := a.catalog.Decode(m, time.Now())
	if err != nil {
		a.settleNew(d, id, fp, iothub.DispositionReject, err.Error(), log)
		return
	}
	ex := &execution{id: id, fp: fp, what: plan.String(), deliveries: []*conn.Delivery{d}}
	if id != "" {
		a.mu.Lock()
		a.inflight[id] = ex
		a.mu.Unlock()
	}
	log.Info("accepted", "plan", plan.String())
	a.dispatcher.Submit(&dispatch.Job{
		Plan: plan,
		Begin: func() error {
			now := time.Now()
			if !plan.Expiry.IsZero() && !now.Before(plan.Expiry) {
				return action.Expired(plan.Expiry)
			}
			if id == "" {
				return nil
			}
			return a.ledger.Start(id, fp, now)
		},
		Moved: func() {
			if plan.CompleteOn == action.CompleteOnStart {
				a.finish(ex, iothub.DispositionComplete, "", log)
			}
		},
		Done: func(r dispatch.Result) { a.done(ex, r, log) },
	})
}

// settleFromLedger answers a redelivery of a message the ledger knows.
func (a *agent) settleFromLedger(d *conn.Delivery, e ledger.Entry, log *slog.Logger) {
	if e.Done {
		disp := iothub.DispositionComplete
		if e.Outcome == ledger.Reject {
			disp = iothub.DispositionReject
		}
		log.Info("redelivered after it was settled: answering again without moving anything", "disposition", disp)
		a.client.Settle(d, disp, e.Reason)
		return
	}
	reason := fmt.Sprintf("interrupted: the agent stopped while running this message (started %s); its outputs were returned to their safe state and it is not run twice",
		e.Started.UTC().Format(time.RFC3339))
	a.settleNew(d, e.ID, e.Fingerprint, iothub.DispositionReject, reason, log)
}

// settleNew records and sends the outcome of a message that never ran in this process.
func (a *agent) settleNew(d *conn.Delivery, id, fp string, disp iothub.Disposition, reason string, log *slog.Logger) {
	log.Info("rejected", "reason", reason)
	a.remember("message", id, "", disp, reason)
	if id != "" {
		if err := a.ledger.Finish(id, fp, outcome(disp), reason, time.Now()); err != nil {
			log.Error("executed-id log", "err", err)
		}
	}
	a.count(disp, reason)
	a.client.Settle(d, disp, reason)
}

func (a *agent) done(ex *execution, r dispatch.Result, log *slog.Logger) {
	var transient *hw.TransientError
	var rej *action.Rejection
	switch {
	case r.Err == nil:
		log.Info("done", "took", r.Elapsed.Round(time.Millisecond))
		a.finish(ex, iothub.DispositionComplete, "", log)
	case !r.Started && errors.Is(r.Err, dispatch.ErrShutdown):
		log.Info("not run: stopping; the hub will redeliver it")
		a.drop(ex)
	case !r.Started && errors.As(r.Err, &rej):
		a.finish(ex, iothub.DispositionReject, rej.Reason, log)
	case !r.Started:
		// The executed-id log could not record the start: running it would risk a double effect.
		log.Error("cannot record the start of the message; abandoning it", "err", r.Err)
		a.abandon(ex, r.Err.Error(), log)
	case errors.Is(r.Err, dispatch.ErrShutdown):
		a.finish(ex, iothub.DispositionReject, "cut short: the agent is stopping"+safedText(r.Safed), log)
	case errors.As(r.Err, &transient):
		log.Warn("transient hardware error; abandoning so the hub redelivers it", "err", r.Err)
		if ex.id != "" {
			if err := a.ledger.Forget(ex.id, time.Now()); err != nil {
				log.Error("executed-id log", "err", err)
			}
		}
		a.abandon(ex, "transient hardware error: "+r.Err.Error()+safedText(r.Safed), log)
	default:
		a.finish(ex, iothub.DispositionReject, "hardware error: "+r.Err.Error()+safedText(r.Safed), log)
	}
	a.mu.Lock()
	if ex.id != "" && a.inflight[ex.id] == ex {
		delete(a.inflight, ex.id)
	}
	a.mu.Unlock()
	a.updateStatus()
}

func safedText(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return "; " + strings.Join(names, ", ") + " returned to safe state"
}

// finish records the outcome (before any acknowledgement) and settles every delivery of ex.
func (a *agent) finish(ex *execution, disp iothub.Disposition, reason string, log *slog.Logger) {
	a.mu.Lock()
	if ex.settled {
		a.mu.Unlock()
		if disp != iothub.DispositionComplete {
			log.Warn("failed after it was completed on start (complete_on: start)", "reason", reason)
		}
		return
	}
	a.mu.Unlock()
	// The done record is written before the outcome is sent and fsynced while it travels: a kill
	// can no longer lose it, and only a power loss inside that fsync, with the outcome lost too,
	// can make the redelivery answer "interrupted" instead (docs/agent.md). Nothing moves twice:
	// the start record was durable before the first output moved.
	written := false
	if ex.id != "" {
		if err := a.ledger.FinishWritten(ex.id, ex.fp, outcome(disp), reason, time.Now()); err != nil {
			log.Error("executed-id log", "err", err)
		} else {
			written = true
		}
	}
	if disp == iothub.DispositionReject {
		log.Info("rejected", "reason", reason)
	}
	a.remember("message", ex.id, ex.what, disp, reason)
	a.mu.Lock()
	ex.settled, ex.disp, ex.reason = true, disp, reason
	ds := ex.deliveries
	ex.deliveries = nil
	a.mu.Unlock()
	a.count(disp, reason)
	if written {
		// Asked before the settle: the disposition's goroutine, started next, must not wait
		// behind an fsync on this goroutine's processor (that cost ≈ 0.1 ms a command; see
		// docs/benchmarks.md, "Where the time goes: agent and feedback").
		a.ledger.SyncSoon()
	}
	for _, d := range ds {
		a.client.Settle(d, disp, reason)
	}
}

func (a *agent) abandon(ex *execution, reason string, log *slog.Logger) {
	a.mu.Lock()
	// Forget the execution first: a redelivery must run afresh, not be abandoned again.
	if ex.id != "" && a.inflight[ex.id] == ex {
		delete(a.inflight, ex.id)
	}
	ds := ex.deliveries
	ex.deliveries = nil
	ex.settled, ex.disp, ex.reason = true, iothub.DispositionAbandon, reason
	a.lastErr = reason
	a.mu.Unlock()
	for _, d := range ds {
		a.client.Settle(d, iothub.DispositionAbandon, reason)
	}
}

func (a *agent) drop(ex *execution) {
	a.mu.Lock()
	ds := ex.deliveries
	ex.deliveries = nil
	a.mu.Unlock()
	for _, d := range ds {
		a.client.Drop(d)
	}
}

func outcome(d iothub.Disposition) ledger.Outcome {
	if d == iothub.DispositionComplete {
		return ledger.Complete
	}
	return ledger.Reject
}

func (a *agent) count(disp iothub.Disposition, reason string) {
	a.mu.Lock()
	switch disp {
	case iothub.DispositionComplete:
		a.completed++
	case iothub.DispositionReject:
		a.rejected++
		a.lastErr = reason
	}
	a.mu.Unlock()
	a.updateStatus()
}

func (a *agent) setConn(s conn.State) {
	a.mu.Lock()
	a.connState = s
	if s.Err != nil {
		a.lastErr = s.Err.Error()
		a.lastHint = s.Hint // systemctl status shows it: the technician's first screen
	}
	if s.Connected {
		a.lastHint = ""
	}
	a.mu.Unlock()
	a.updateStatus()
}

func (a *agent) status() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var sb strings.Builder
	if a.connState.Connected {
		fmt.Fprintf(&sb, "connected to %s", a.connState.Broker)
	} else {
		fmt.Fprintf(&sb, "connecting to %s", a.connState.Broker)
	}
	fmt.Fprintf(&sb, "; %d completed, %d rejected", a.completed, a.rejected)
	if a.lastErr != "" {
		e := a.lastErr
		if len(e) > 120 {
			e = e[:120] + "…"
		}
		fmt.Fprintf(&sb, "; last error: %s", e)
		if a.lastHint != "" {
			fmt.Fprintf(&sb, "; likely: %s", a.lastHint)
		}
	}
	return sb.String()
}

// updateStatus has statusLoop send systemd the current STATUS=. It never waits: sd_notify dials a
// socket per message (4% of the agent's CPU under the latency row), which has no place
// between an outcome and its disposition; updates made while one is sent coalesce into the next.
func (a *agent) updateStatus() {
	select {
	case a.statusKick <- struct{}{}:
	default:
	}
}

// statusEvery spaces STATUS= updates: what `systemctl status` shows is at most this old, and a
// busy board sends one update per interval instead of two per command.
const statusEvery = 250 * time.Millisecond

func (a *agent) statusLoop(stop <-chan struct{}) {
	for {
		select {
		case <-a.statusKick:
		case <-stop:
			return
		}
		_ = a.notifier.Status(a.status())
		// Changes made meanwhile wait in statusKick and go out, current, after the pause.
		select {
		case <-time.After(statusEvery):
		case <-stop:
			return
		}
	}
}

// watchdog feeds systemd only while the MQTT loop turns and the hardware backend is healthy: a hung
// agent gets restarted, an offline one does not (restarting would not bring the network back).
func (a *agent) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.board.Healthy(); err != nil {
			a.log.Error("hardware unhealthy: not feeding the watchdog", "err", err)
			continue
		}
		if !a.client.Alive(every + 5*time.Second) {
			a.log.Error("MQTT loop stalled: not feeding the watchdog")
			continue
		}
		_ = a.notifier.Watchdog()
	}
}

// Fingerprint identifies a message's content (correlation id, expiry, application properties,
// body): a redelivery has the same one; a sender reusing a message id for a new command does not.
func Fingerprint(m *iothub.Message) string {
	h := sha256.New()
	fmt.Fprintf(h, "cid=%q\nexp=%d\n", m.CorrelationID, m.ExpiryTime.UnixNano())
	for _, p := range m.Properties {
		fmt.Fprintf(h, "%q=%q\n", p.Name, p.Value)
	}
	h.Write(m.Body)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// maxIntake bounds the deliveries waiting for the agent: far above the hub's in-flight window
// (16 by default), and small enough that a hostile broker pushing messages without end cannot
// exhaust a Pi's memory (issue #17 grew it to 515 MB). Beyond it deliveries are dropped
// unacknowledged: the broker keeps them and redelivers.
const maxIntake = 256

// queue is a bounded FIFO: the paho handler pushes and returns at once.
type queue struct {
	mu     sync.Mutex
	items  []*conn.Delivery
	wake   chan struct{}
	closed bool
	max    int
	drop   func(*conn.Delivery)
	onFull func(*conn.Delivery) // called (outside the lock) for a delivery refused because the queue is full
}

func newQueue(max int) *queue { return &queue{wake: make(chan struct{}, 1), max: max} }

func (q *queue) push(d *conn.Delivery) {
	q.mu.Lock()
	if q.closed || len(q.items) >= q.max {
		drop, full, closed := q.drop, q.onFull, q.closed
		q.mu.Unlock()
		if !closed && full != nil {
			full(d)
		}
		if drop != nil {
			drop(d)
		}
		return
	}
	q.items = append(q.items, d)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) pop() (*conn.Delivery, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		if len(q.items) > 0 {
			d := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return d, true
		}
		q.mu.Unlock()
		<-q.wake
	}
}

// close stops pop; queued and later deliveries go to drop.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	rest := q.items
	q.items = nil
	drop := q.drop
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	if drop != nil {
		for _, d := range rest {
			drop(d)
		}
	}
}
