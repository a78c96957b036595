package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Hub is the running core. All methods are safe for concurrent use.
type Hub struct {
	cfg Config
	ev  Events
	log *slog.Logger
	st  store

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // background goroutines (timers, dispatchers)

	attachMu attachLocks // per device: serialises Attach/Detach so a device's hand-over is ordered (attachlock.go)

	mu       sync.Mutex
	devs     map[string]*devState  // attached connections, by device id
	conns    map[string]connInfo   // connection state shown by GetDevice (in memory)
	activity map[string]time.Time  // lastActivityTime (in memory)
	flushed  map[string]connRecord // connection history as last written (connhistory.go)
	gone     func(deviceID string)
	creds    func(deviceID string) // OnCredentialsChanged

	polMu sync.RWMutex
	pols  map[string]Policy

	waitMu  sync.Mutex
	waiters map[waitKey]*waiter

	fbMu      sync.Mutex
	fbCh      *fbSignal    // closed (and replaced) when feedback may have become receivable (feedback.go)
	fbWaiting atomic.Int32 // ReceiveFeedback calls blocked for feedback (tests wait on it)
	fbHand    fbHandoff    // batches locked for waiting receivers by other transactions (feedback_handoff.go)

	timer  *sweeper
	unlock func()   // releases DATA/hub.lock
	cl     *cluster // nil unless the store is shared (cluster.go)

	skew atomic.Int64 // store clock − local clock, ns (shared stores: see dbclock.go)
}

type connInfo struct {
	connected bool
	updated   time.Time
}

// devState is one attachment: a Conn and the deliveries made to it.
type devState struct {
	id   string
	conn Conn
	// sendMu is held while Deliver is called and by detach, so a detached Conn never receives a
	// delivery after Detach returns. Settle never takes it.
	sendMu sync.Mutex

	// guarded by Hub.mu
	detached bool
	broken   bool                 // a Deliver failed: no more deliveries until the device attaches again
	inflight map[string]time.Time // lock token → locked until
	kicked   bool
	running  bool
	// queued: the store may hold Enqueued messages for this device that no delivery round has
	// seen. Every kick sets it; a round that found fewer messages than free slots clears it, so a
	// slot freed by a settle starts a round only when there may be something to deliver.
	queued bool

	epoch int64     // the ownership epoch this node holds the device at (shared stores)
	since time.Time // when attached (local clock)
}

type waitKey struct{ dev, mid string }

type waiter struct {
	ch chan struct{}
	n  int
}

// Open opens (creating if needed) the store in dataDir (hub.db), runs crash recovery (every
// Invisible message goes back to Enqueued, since no connection survives a restart; timers rearmed
// from stored deadlines), creates the built-in policies on first start, and starts the timers.
func Open(ctx context.Context, dataDir string, cfg Config, ev Events) (*Hub, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	st, unlock, err := openStore(ctx, dataDir, cfg.Store, log)
	if err != nil {
		return nil, err
	}
	h := &Hub{
		cfg: cfg, ev: ev, log: log, st: st,
		done:     make(chan struct{}),
		devs:     map[string]*devState{},
		conns:    map[string]connInfo{},
		activity: map[string]time.Time{},
		pols:     map[string]Policy{},
		waiters:  map[waitKey]*waiter{},
		fbCh:     newFBSignal(),
	}
	h.unlock = unlock
	if st.shared() {
		// Before any goroutine that applies effects starts: they read h.cl.
		node := cfg.NodeID
		if node == "" {
			if node, _ = os.Hostname(); node == "" {
				node = "node"
			}
		}
		h.cl = newCluster(h, node)
	}
	if h.cfg.Now == nil {
		h.cfg.Now = h.cfg.Clock.Now
		if _, real := h.cfg.Clock.(SystemClock); real && st.shared() {
			// Lock expiry and TTL are decided by the database's clock, so that nodes whose clocks
			// differ agree (dbclock.go).
			if err := h.syncClock(ctx); err != nil {
				return h.failOpen(err)
			}
			h.cfg.Now = h.storeNow
			h.wg.Add(1)
			go h.clockLoop()
		}
	}
	if err := h.recover(ctx); err != nil {
		return h.failOpen(err)
	}
	if err := h.loadConnHistory(ctx); err != nil {
		return h.failOpen(fmt.Errorf("load connection history: %w", err))
	}
	h.timer = newSweeper(h)
	if err := h.timer.first(); err != nil {
		return h.failOpen(err)
	}
	h.wg.Add(2)
	go h.timer.run()
	go h.runConnHistory()
	if h.cl != nil {
		if err := h.cl.start(ctx); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// failOpen undoes a failed Open before the timer and the cluster start: the cluster's clock loop
// may already run, and must stop before the store closes under it.
func (h *Hub) failOpen(err error) (*Hub, error) {
	close(h.done)
	h.wg.Wait()
	h.st.close()
	h.unlock()
	return nil, err
}

// openStore opens the store cfg.Store names: SQLite in dataDir (locked against a second hub), or a
// PostgreSQL server that several nodes share.
// The data directory is locked either way: it holds the node's TLS material and endpoints.json.
func openStore(ctx context.Context, dataDir, setting string, log logger) (store, func(), error) {
	var open func() (*sqlStore, error)
	switch {
	case setting == "" || setting == "sqlite":
		open = func() (*sqlStore, error) { return openSQLite(ctx, dataDir, log) }
	case IsPostgresURL(setting):
		open = func() (*sqlStore, error) { return openPostgres(ctx, setting, log) }
	default:
		return nil, nil, fmt.Errorf("store: %q: want sqlite, a postgres:// URL or a key=value PostgreSQL connection string", redact(setting))
	}
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return nil, nil, err
	}
	st, err := open()
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return st, unlock, nil
}

// recover brings the stored state to what a hub with no connections has, and loads the policies.
func (h *Hub) recover(ctx context.Context) error {
	var pols []Policy
	e := &effects{}
	var requeued, dead int
	var unlocked int64
	err := h.st.update(ctx, func(tx storeTx) error {
		*e, requeued, dead = effects{}, 0, 0 // fn may run again (a retried transaction)
		var err error
		if pols, err = ensurePolicies(tx); err != nil {
			return fmt.Errorf("policies: %w", err)
		}
		now := h.now()
		if h.st.shared() {
			// Other nodes hold their locks and feedback batches: what this node held before
			// it restarted comes back when those locks expire, by the cluster's sweep.
			return h.formBatches(tx, now, e)
		}
		inv, err := tx.invisible()
		if err != nil {
			return err
		}
		for i := range inv {
			outcome, err := h.release(tx, &inv[i], now, e)
			if err != nil {
				return err
			}
			if outcome == "" {
				requeued++
			} else {
				dead++
			}
		}
		if unlocked, err = tx.unlockAllBatches(); err != nil {
			return err
		}
		return h.formBatches(tx, now, e)
	})
	if err != nil {
		return fmt.Errorf("recover hub state: %w", err)
	}
	h.polMu.Lock()
	for _, p := range pols {
		h.pols[p.Name] = p
	}
	h.polMu.Unlock()
	if requeued+dead > 0 || unlocked > 0 {
		h.log.Info("recovered after restart", "requeued", requeued, "deadLettered", dead, "feedbackBatchesUnlocked", unlocked)
	}
	// The events of what recovery settled or requeued: the metrics count a message dead-lettered
	// at start-up like any other (no device is attached yet, and the first sweep arms the timer).
	h.apply(e)
	return nil
}

// Close stops timers, waits for in-flight writes, closes the store. Later calls return ErrClosed.
func (h *Hub) Close() error {
	err := ErrClosed
	h.closeOnce.Do(func() {
		if h.cl != nil {
			h.cl.leave()
		}
		h.mu.Lock() // kick adds to wg under h.mu: no Add can race the Wait below
		close(h.done)
		h.mu.Unlock()
		h.wg.Wait()
		err = h.st.close()
		h.unlock()
	})
	return err
}

func (h *Hub) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func (h *Hub) now() time.Time { return h.cfg.Now().UTC().Truncate(time.Millisecond) }

// ---- effects: what a committed transaction changes outside the store ----

// effects collects, inside a transaction, what must happen once it committed: waking waiters,
// freeing delivery slots, kicking dispatchers, events, rearming the timer.
type effects struct {
	settled  []msgRow        // terminal now
	requeued []msgRow        // back to Enqueued (LockToken = the lock they had)
	kick     map[string]bool // devices with messages to deliver
	freed    map[string]bool // devices with a delivery slot freed
	// round: a device whose next deliveries this transaction locked itself (a settle taking the
	// device's round, round.go): the slot it freed starts no other round.
	round    string
	records  int          // feedback records written
	feedback bool         // feedback became receivable: a batch formed, or a record a waiting receiver batches
	handoff  *handedBatch // a batch locked for a waiting receiver (feedback_handoff.go)
	deadline time.Time
}

func (e *effects) kickDevice(id string) {
	if e.kick == nil {
		e.kick = map[string]bool{}
	}
	e.kick[id] = true
}

func (e *effects) wake(t time.Time) { e.deadline = earliest(e.deadline, t) }

// apply runs e after its transaction committed.
func (h *Hub) apply(e *effects) {
	if e == nil {
		return
	}
	var freed []msgRow
	for _, m := range e.settled {
		if m.LockToken != "" {
			freed = append(freed, m)
		}
	}
	freed = append(freed, e.requeued...)
	if len(freed) > 0 {
		h.mu.Lock()
		for _, m := range freed {
			if ds := h.devs[m.DeviceID]; ds != nil {
				if _, ok := ds.inflight[m.LockToken]; ok {
					delete(ds.inflight, m.LockToken)
					if e.freed == nil {
						e.freed = map[string]bool{}
					}
					e.freed[m.DeviceID] = true
				}
			}
		}
		h.mu.Unlock()
	}
	for _, m := range e.requeued {
		e.kickDevice(m.DeviceID)
		if h.ev.Abandoned != nil {
			h.ev.Abandoned(m.DeviceID)
		}
	}
	for _, m := range e.settled {
		h.notify(waitKey{m.DeviceID, m.MessageID})
		if h.ev.Settled != nil {
			h.ev.Settled(m.DeviceID, m.Outcome, m.SettledAt.Sub(m.EnqueuedAt))
		}
		h.log.Debug("message settled", "device", m.DeviceID, "messageId", m.MessageID,
			"seq", m.Seq, "outcome", m.Outcome, "deliveryCount", m.DeliveryCount)
	}
	for id := range e.kick {
		h.kick(id)
	}
	for id := range e.freed {
		if !e.kick[id] && id != e.round {
			h.kickFreed(id)
		}
	}
	if e.handoff != nil {
		h.handOff(e.handoff)
	}
	if e.feedback {
		h.feedbackReady()
	}
	if h.cl != nil {
		h.cl.publish(e)
	}
	if !e.deadline.IsZero() && h.timer != nil {
		h.timer.arm(e.deadline)
	}
}

// ---- terminal transitions and feedback records (inside a transaction) ----

// finish moves m to its terminal outcome and, when its ack asks for it, writes its feedback
// record in the same transaction: a crash can neither lose the record nor make two.
func (h *Hub) finish(tx storeTx, m *msgRow, outcome iothub.FeedbackStatus, reason string, now time.Time, e *effects) error {
	return h.conclude(tx, m, outcome, reason, now, e, tx.settle)
}

func (h *Hub) conclude(tx storeTx, m *msgRow, outcome iothub.FeedbackStatus, reason string, now time.Time, e *effects, store func(*msgRow) error) error {
	m.Outcome, m.Reason, m.SettledAt, m.State = outcome, reason, now, outcome.Terminal()
	if err := store(m); err != nil {
		return fmt.Errorf("settle %s/%d: %w", m.DeviceID, m.Seq, err)
	}
	return h.recorded(tx, m, now, e)
}

// recorded follows m's move to the settled outcomes (m.Outcome, Reason set) in the same
// transaction: its feedback record when its ack asks for one, and the effects.
func (h *Hub) recorded(tx storeTx, m *msgRow, now time.Time, e *effects) error {
	outcome, reason := m.Outcome, m.Reason
	if m.Ack.Wants(outcome) {
		d, _, err := tx.device(m.DeviceID)
		if err != nil {
			return err
		}
		rec := iothub.FeedbackRecord{
			OriginalMessageID:  m.MessageID,
			DeviceID:           m.DeviceID,
			DeviceGenerationID: d.GenerationID,
			// Azure's FeedbackRecord.EnqueuedTimeUtc is "when the outcome of the message happened
			// (for example, the hub received the feedback message or the original message
			// expired)", not when the message was sent.
			EnqueuedTimeUTC: now,
			StatusCode:      outcome,
			Description:     iothub.FeedbackDescription(outcome),
			Reason:          reason,
			DeliveryCount:   m.DeliveryCount,
			CorrelationID:   m.CorrelationID,
		}
		if err := tx.insertRecord(rec, now); err != nil {
			return fmt.Errorf("feedback record: %w", err)
		}
		e.records++
		e.wake(now.Add(h.cfg.FeedbackInterval))
		e.feedback = true // a receiver already waiting batches it now (ReceiveFeedback)
	}
	e.settled = append(e.settled, *m)
	return nil
}

// batchIfRecorded forms feedback batches when the operation wrote a feedback record. Only a new
// record can make a batch due sooner than the deadline the timer already holds (finish arms it
// for the record's interval, and the sweep forms what is due), so an operation that wrote none
// skips counting the unbatched records: one statement less per send, delivery and settle.
func (h *Hub) batchIfRecorded(tx storeTx, now time.Time, e *effects) error {
	if e.records == 0 {
		return nil
	}
	return h.formBatches(tx, now, e)
}

// release takes an Invisible message out of its lock: back to Enqueued, or dead-lettered when it
// already had MaxDeliveryCount deliveries (DeliveryCountExceeded) or its TTL passed (Expired).
// It returns the outcome, "" when requeued.
func (h *Hub) release(tx storeTx, m *msgRow, now time.Time, e *effects) (iothub.FeedbackStatus, error) {
	switch {
	case m.DeliveryCount >= h.cfg.MaxDeliveryCount:
		return iothub.StatusDeliveryCountExceeded, h.finish(tx, m, iothub.StatusDeliveryCountExceeded, "", now, e)
	case !m.ExpiresAt.After(now):
		return iothub.StatusExpired, h.finish(tx, m, iothub.StatusExpired, "", now, e)
	}
	if err := tx.requeue(m.DeviceID, m.Seq); err != nil {
		return "", err
	}
	e.requeued = append(e.requeued, *m)
	e.wake(m.ExpiresAt)
	return "", nil
}

// ---- waiters (WaitSettled) ----

func (h *Hub) waitChan(k waitKey) (<-chan struct{}, func()) {
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	w := h.waiters[k]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		h.waiters[k] = w
	}
	w.n++
	return w.ch, func() {
		h.waitMu.Lock()
		defer h.waitMu.Unlock()
		w.n--
		if w.n == 0 && h.waiters[k] == w {
			delete(h.waiters, k)
		}
	}
}

func (h *Hub) notify(k waitKey) {
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	if w := h.waiters[k]; w != nil {
		close(w.ch)
		delete(h.waiters, k)
	}
}

func (h *Hub) notifyDevice(id string) {
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	for k, w := range h.waiters {
		if k.dev == id {
			close(w.ch)
			delete(h.waiters, k)
		}
	}
}

// update wraps the store's update with the closed check and effect application.
func (h *Hub) update(ctx context.Context, fn func(tx storeTx, e *effects) error) error {
	return h.updateFor(ctx, "", fn)
}

// updateFor is update for an operation on one device (store.updateFor; "": none in particular).
func (h *Hub) updateFor(ctx context.Context, deviceID string, fn func(tx storeTx, e *effects) error) error {
	if h.closed() {
		return ErrClosed
	}
	e := &effects{}
	run := func(tx storeTx) error {
		*e = effects{}
		return fn(tx, e)
	}
	var err error
	if deviceID == "" {
		err = h.st.update(ctx, run)
	} else {
		err = h.st.updateFor(ctx, deviceID, run)
	}
	if err != nil {
		return err
	}
	h.apply(e)
	return nil
}

func (h *Hub) view(ctx context.Context, fn func(tx storeTx) error) error {
	if h.closed() {
		return ErrClosed
	}
	return h.st.view(ctx, fn)
}

func isClosed(err error) bool { return errors.Is(err, ErrClosed) }
