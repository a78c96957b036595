package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/version"
)

// A cluster is several hubs (nodes) on one shared store (PostgreSQL). Each node serves whatever
// devices connect to it and the whole service API; what one node does, the others learn through
// the store:
//
//   - Ownership. A node that attaches a device claims it: device_sessions gets the node and a new
//     epoch, and the device's Invisible messages go back to the queue (Azure's lock-lost on
//     reconnect). Every later write the node makes for the device (locking messages for delivery,
//     returning them, a settle) first checks, under a row lock, that it still holds that epoch: a
//     node that was cut off and comes back cannot deliver or settle on stale state. The previous
//     owner learns of the takeover from a wake-up (or its next poll) and drops its session.
//   - Wake-ups. After a commit, a node tells the others what changed (messages queued for a
//     device, settles that --wait callers wait for, feedback ready, devices taken over or gone):
//     coalesced into one NOTIFY every few milliseconds, sent outside the data transactions. A
//     poll every pollInterval is the safety net: notifications are lost while a listener
//     reconnects and do not pass transaction-pooling proxies.
//   - Timers run on every node; their SELECTs skip rows another node holds (FOR UPDATE SKIP
//     LOCKED), so each deadline is applied once, and they keep running when any node dies.
//   - Heartbeats. Each node updates its row in nodes every heartbeatInterval. A node whose
//     heartbeat is older than nodeTimeout is declared dead by whichever node sees it first: its
//     devices' locked messages go back to the queue and their epochs are bumped, so its boards
//     carry on elsewhere and the dead node, if it resumes, is fenced.

const (
	heartbeatInterval = time.Second
	nodeTimeout       = 5 * time.Second
	pollInterval      = time.Second
	coalesceDelay     = 2 * time.Millisecond
	maxNotifyPayload  = 7000 // PostgreSQL's limit is 7,999 bytes
)

// errFenced: another node holds the device now.
var errFenced = errors.New("device is held by another node")

// wake is one NOTIFY payload.
type wake struct {
	Node     string      `json:"n"`
	Kick     []string    `json:"k,omitempty"` // devices with messages to deliver
	Settled  [][2]string `json:"s,omitempty"` // device, message id
	Feedback bool        `json:"f,omitempty"`
	Gone     []string    `json:"g,omitempty"` // disabled or deleted: drop their sessions
	Owned    []string    `json:"o,omitempty"` // taken over by Node
	// OwnedAt is the epoch Node took each of Owned at (same order). A node drops its session of
	// such a device only while it holds an older epoch: a wake-up that arrives after the device
	// already moved on to this node (it reconnected within the coalescing window) is stale.
	// Missing (an older node's wake-up): drop it.
	OwnedAt []int64 `json:"oe,omitempty"`
	// Creds: devices whose keys changed ("" for a policy's): each node re-checks the sessions it
	// holds (credentials.go). Best effort like every wake-up: a node that misses it still refuses
	// the old key at the next CONNECT.
	Creds []string `json:"c,omitempty"`
	// Desired: twin desired changes made on Node for devices with no session there (route.go).
	Desired []desiredWake `json:"d,omitempty"`
	// Hello: Node has just joined (or rejoined): the others send their wake-ups again.
	Hello bool `json:"h,omitempty"`
}

func (w *wake) empty() bool {
	return len(w.Kick) == 0 && len(w.Settled) == 0 && !w.Feedback && len(w.Gone) == 0 && len(w.Owned) == 0 && len(w.Creds) == 0 && len(w.Desired) == 0 && !w.Hello
}

type cluster struct {
	h    *Hub
	node string

	mu        sync.Mutex
	out       wake
	apiURL    string // AdvertiseAPI (route.go)
	apiHost   string
	onDesired func(deviceID string, version int64, patch []byte) // OnDesiredChange (route.go)
	signal    chan struct{}
	// peers: another live node is known, so wake-ups are worth sending. A node alone on the
	// store (the common single-node PostgreSQL set-up) sends none of the frequent kinds a poll
	// recovers: each was a NOTIFY, its own echo read back and decoded, ≈ 8 % of the hub's CPU
	// under load. Set from the nodes table at start and every heartbeat, and at once by any
	// wake-up of another node (a joining node says Hello).
	peers atomic.Bool
	heard atomic.Int64 // when a wake-up of another node last arrived (local clock, ns)
	echo  string       // how this node's own wake-ups begin: they come back to its listener
}

func newCluster(h *Hub, node string) *cluster {
	q, _ := json.Marshal(node)
	return &cluster{h: h, node: node, out: wake{Node: node}, signal: make(chan struct{}, 1), echo: `{"n":` + string(q) + `,`}
}

// start registers the node, takes back what an earlier run of this node held (a crash leaves its
// sessions behind) and starts the loops.
func (c *cluster) start(ctx context.Context) error {
	h := c.h
	err := h.update(ctx, func(tx storeTx, e *effects) error {
		now := h.now()
		if err := tx.registerNode(nodeRow{ID: c.node, Started: now, Heartbeat: now, Version: version.Version}); err != nil {
			return err
		}
		return c.releaseNode(tx, c.node, now, e)
	})
	if err != nil {
		return fmt.Errorf("register node %s: %w", c.node, err)
	}
	listening := make(chan struct{})
	h.wg.Add(3)
	go c.sender()
	go c.listener(listening)
	go c.ticker()
	select {
	case <-listening:
	case <-ctx.Done():
		return ctx.Err()
	}
	var nodes []nodeRow
	if err := h.view(ctx, func(tx storeTx) error {
		var err error
		nodes, err = tx.nodes()
		return err
	}); err != nil {
		return fmt.Errorf("read the cluster's nodes: %w", err)
	}
	c.peers.Store(c.othersAlive(nodes, h.now()))
	c.hello()
	return nil
}

// othersAlive reports whether nodes holds another node whose heartbeat is recent.
func (c *cluster) othersAlive(nodes []nodeRow, now time.Time) bool {
	for _, n := range nodes {
		if n.ID != c.node && n.Heartbeat.After(now.Add(-nodeTimeout)) {
			return true
		}
	}
	return false
}

// hello tells the other nodes that this one is there (they may have stopped sending wake-ups).
func (c *cluster) hello() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.h.st.notify(ctx, split(wake{Node: c.node, Hello: true})[0]); err != nil && !isClosed(err) {
		c.h.log.Warn("announcing this node to the others failed; they find it at their next heartbeat", "err", err)
	}
}

// leave removes the node's heartbeat on a clean shutdown (its sessions were released as its
// devices detached): the others need not wait for nodeTimeout.
func (c *cluster) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.h.st.update(ctx, func(tx storeTx) error {
		e := &effects{}
		if err := c.releaseNode(tx, c.node, c.h.now(), e); err != nil {
			return err
		}
		return tx.deleteNode(c.node)
	})
	if err != nil && !isClosed(err) {
		c.h.log.Warn("leaving the cluster", "node", c.node, "err", err)
	}
}

// releaseNode takes node's devices from it: their Invisible messages go back to the queue and
// their epochs are bumped (any write the node still makes for them is refused).
func (c *cluster) releaseNode(tx storeTx, node string, now time.Time, e *effects) error {
	devs, err := tx.sessionsOf(node)
	if err != nil {
		return err
	}
	for dev := range devs {
		if err := c.h.releaseInvisible(tx, dev, now, e); err != nil {
			return err
		}
		if err := tx.fenceDevice(dev); err != nil {
			return err
		}
	}
	return c.h.formBatches(tx, now, e)
}

// releaseInvisible returns a device's locked messages to the queue (delivery-count and TTL rules
// applied).
func (h *Hub) releaseInvisible(tx storeTx, dev string, now time.Time, e *effects) error {
	ms, err := tx.pending(dev)
	if err != nil {
		return err
	}
	for i := range ms {
		if ms[i].State != iothub.StateInvisible {
			continue
		}
		if _, err := h.release(tx, &ms[i], now, e); err != nil {
			return err
		}
	}
	return nil
}

// claim makes this node the device's owner; the device's locked messages are redelivered here.
func (c *cluster) claim(dev string) (int64, error) {
	var epoch int64
	err := c.h.updateFor(context.Background(), dev, func(tx storeTx, e *effects) error {
		now := c.h.now()
		var err error
		if epoch, err = tx.claimDevice(dev, c.node, now); err != nil {
			return err
		}
		if err := c.h.releaseInvisible(tx, dev, now, e); err != nil {
			return err
		}
		return c.h.formBatches(tx, now, e)
	})
	if err == nil {
		c.mu.Lock()
		c.out.Owned = append(c.out.Owned, dev)
		c.out.OwnedAt = append(c.out.OwnedAt, epoch)
		c.mu.Unlock()
		c.kickSender()
	}
	return epoch, err
}

// owner is the ownership this node's writes for ds's device are conditional on (the zero owner
// without a cluster, or without a session).
func (h *Hub) owner(ds *devState) owner {
	if h.cl == nil || ds == nil {
		return owner{}
	}
	return owner{node: h.cl.node, epoch: ds.epoch}
}

// owns checks, inside a transaction, that this node still holds ds's device at ds's epoch.
func (h *Hub) owns(tx storeTx, ds *devState) error {
	if h.cl == nil {
		return nil
	}
	node, epoch, ok, err := tx.deviceOwner(ds.id)
	if err != nil {
		return err
	}
	if !ok || node != h.cl.node || epoch != ds.epoch {
		return errFenced
	}
	return nil
}

// lost drops a local session whose device another node took (or that this node lost when it was
// declared dead): no write for it is attempted, and the broker disconnects the device.
func (c *cluster) lost(ds *devState) {
	h := c.h
	h.mu.Lock() // Close closes done under h.mu: no Add races its Wait
	if h.closed() {
		h.mu.Unlock()
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		l := h.attachMu.of(ds.id)
		l.Lock()
		h.mu.Lock()
		cur := h.devs[ds.id]
		h.mu.Unlock()
		if cur != ds {
			l.Unlock()
			return
		}
		h.detach(ds)
		l.Unlock()
		h.log.Info("device taken over by another node; dropping its session here", "device", ds.id)
		h.mu.Lock()
		fn := h.gone
		h.mu.Unlock()
		if fn != nil {
			fn(ds.id)
		}
	}()
}

// publish queues what a commit changed for the other nodes.
func (c *cluster) publish(e *effects) {
	c.mu.Lock()
	n := 0
	c.h.mu.Lock()
	for id := range e.kick {
		if c.h.devs[id] == nil { // a local device is kicked locally
			c.out.Kick = append(c.out.Kick, id)
			n++
		}
	}
	c.h.mu.Unlock()
	for _, m := range e.settled {
		c.out.Settled = append(c.out.Settled, [2]string{m.DeviceID, m.MessageID})
		n++
	}
	if e.feedback {
		c.out.Feedback = true
		n++
	}
	c.mu.Unlock()
	if n > 0 {
		c.kickSender()
	}
}

// publishCreds tells the other nodes that dev's keys (or, for "", a policy's) changed.
func (c *cluster) publishCreds(dev string) {
	c.mu.Lock()
	c.out.Creds = append(c.out.Creds, dev)
	c.mu.Unlock()
	c.kickSender()
}

func (c *cluster) publishGone(dev string) {
	c.mu.Lock()
	c.out.Gone = append(c.out.Gone, dev)
	c.mu.Unlock()
	c.kickSender()
}

func (c *cluster) kickSender() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// sender coalesces wake-ups: the first change opens a window of coalesceDelay, everything queued
// in it goes out in one NOTIFY (split to stay under PostgreSQL's payload limit).
func (c *cluster) sender() {
	defer c.h.wg.Done()
	for {
		select {
		case <-c.h.done:
			return
		case <-c.signal:
		}
		select {
		case <-c.h.done:
			return
		case <-time.After(coalesceDelay):
		}
		c.mu.Lock()
		w := c.out
		c.out = wake{Node: c.node}
		c.mu.Unlock()
		if !c.peers.Load() {
			// Alone as far as this node knows, but a node that joined a moment ago may not
			// have been heard yet (its Hello is on its way). What a poll recovers is dropped;
			// what none does (a desired change, changed keys) goes out anyway: rare, and
			// cheap to send to nobody.
			w = wake{Node: c.node, Desired: w.Desired, Creds: w.Creds}
		}
		if w.empty() {
			continue
		}
		for _, p := range split(w) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := c.h.st.notify(ctx, p); err != nil && !isClosed(err) {
				// The poll picks up what this wake-up would have told.
				c.h.log.Warn("wake-up to the other nodes failed; they find the change by polling", "err", err)
			}
			cancel()
		}
	}
}

// split encodes w as payloads under maxNotifyPayload bytes.
func split(w wake) []string {
	b, _ := json.Marshal(w)
	if len(b) <= maxNotifyPayload {
		return []string{string(b)}
	}
	a, z := wake{Node: w.Node, Feedback: w.Feedback}, wake{Node: w.Node}
	half := func(s []string) ([]string, []string) { return s[:len(s)/2], s[len(s)/2:] }
	a.Kick, z.Kick = half(w.Kick)
	a.Gone, z.Gone = half(w.Gone)
	a.Owned, z.Owned = half(w.Owned)
	if len(w.OwnedAt) == len(w.Owned) {
		a.OwnedAt, z.OwnedAt = w.OwnedAt[:len(a.Owned)], w.OwnedAt[len(a.Owned):]
	}
	a.Creds, z.Creds = half(w.Creds)
	a.Desired, z.Desired = w.Desired[:len(w.Desired)/2], w.Desired[len(w.Desired)/2:]
	a.Settled, z.Settled = w.Settled[:len(w.Settled)/2], w.Settled[len(w.Settled)/2:]
	return append(split(a), split(z)...)
}

// listener receives the other nodes' wake-ups, reconnecting after a failure; every (re)connect is
// followed by a poll, for what was sent while nobody listened.
func (c *cluster) listener(listening chan struct{}) {
	defer c.h.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.h.done
		cancel()
	}()
	first := true
	for {
		err := c.h.st.listen(ctx, func() {
			if first {
				close(listening)
				first = false
			} else {
				c.poll()
			}
		}, c.received)
		if ctx.Err() != nil {
			return
		}
		c.h.log.Warn("listening for the other nodes' wake-ups failed; reconnecting in 1s", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (c *cluster) received(payload string) {
	if strings.HasPrefix(payload, c.echo) {
		return // this node's own
	}
	var w wake
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		c.h.log.Warn("unreadable wake-up", "err", err)
		return
	}
	if w.Node == c.node {
		return
	}
	c.heard.Store(time.Now().UnixNano())
	c.peers.Store(true)
	h := c.h
	for _, id := range w.Kick {
		h.kick(id)
	}
	for _, s := range w.Settled {
		h.notify(waitKey{s[0], s[1]})
	}
	if w.Feedback {
		h.feedbackReady()
	}
	for _, id := range w.Creds {
		h.localCredentialsChanged(id)
	}
	c.desiredChanged(w.Desired)
	for i, id := range append(w.Owned, w.Gone...) {
		h.mu.Lock()
		ds := h.devs[id]
		h.mu.Unlock()
		if ds == nil || (i < len(w.Owned) && i < len(w.OwnedAt) && w.OwnedAt[i] <= ds.epoch) {
			continue
		}
		c.lost(ds)
	}
}

// ticker heartbeats, declares dead nodes dead and polls.
func (c *cluster) ticker() {
	defer c.h.wg.Done()
	t := time.NewTicker(min(heartbeatInterval, pollInterval))
	defer t.Stop()
	for {
		select {
		case <-c.h.done:
			return
		case <-t.C:
		}
		if err := c.beat(); err != nil && !isClosed(err) {
			c.h.log.Warn("heartbeat failed", "node", c.node, "err", err)
		}
		c.poll()
	}
}

func (c *cluster) beat() error {
	h := c.h
	h.mu.Lock()
	n := len(h.devs)
	h.mu.Unlock()
	began := time.Now().UnixNano()
	var alive, rejoined bool
	err := h.update(context.Background(), func(tx storeTx, e *effects) error {
		alive, rejoined = false, false
		now := h.now()
		known, err := tx.heartbeat(c.node, now, n)
		if err != nil {
			return err
		}
		if !known {
			// Another node declared this one dead (it stalled past nodeTimeout): its devices
			// were released and fenced; the poll drops their sessions here.
			h.log.Warn("this node was declared dead by another (stalled past the node timeout); its devices reconnect", "node", c.node)
			url, host := c.advertised()
			if err := tx.registerNode(nodeRow{ID: c.node, Started: now, Heartbeat: now, Devices: n, Version: version.Version,
				APIURL: url, APIHost: host}); err != nil {
				return err
			}
			rejoined = true
		}
		dead, err := tx.deadNodes(now.Add(-nodeTimeout))
		if err != nil {
			return err
		}
		for _, node := range dead {
			if node == c.node {
				continue
			}
			h.log.Warn("node declared dead: its heartbeat stopped; its devices' locked messages go back to the queue", "node", node)
			if err := c.releaseNode(tx, node, now, e); err != nil {
				return err
			}
			if err := tx.deleteNode(node); err != nil {
				return err
			}
		}
		nodes, err := tx.nodes()
		alive = c.othersAlive(nodes, now)
		return err
	})
	if err != nil {
		return err
	}
	// A wake-up heard while the heartbeat ran comes from a node the snapshot may have missed.
	c.peers.Store(alive || c.heard.Load() >= began)
	if rejoined {
		c.hello()
	}
	return nil
}

// poll is the safety net under the wake-ups: deliver what is queued for local devices, drop
// sessions another node took, and let waiters look again.
func (c *cluster) poll() {
	h := c.h
	var queued []string
	var mine map[string]int64
	began := time.Now()
	err := h.view(context.Background(), func(tx storeTx) error {
		var err error
		if queued, err = tx.enqueuedDevices(); err != nil {
			return err
		}
		mine, err = tx.sessionsOf(c.node)
		return err
	})
	if err != nil {
		if !isClosed(err) {
			h.log.Debug("poll failed", "err", err)
		}
		return
	}
	for _, id := range queued {
		h.kick(id)
	}
	h.mu.Lock()
	var stale []*devState
	for id, ds := range h.devs {
		// A session attached after the snapshot was taken may be missing from it.
		if mine[id] != ds.epoch && ds.since.Before(began) {
			stale = append(stale, ds)
		}
	}
	h.mu.Unlock()
	for _, ds := range stale {
		c.lost(ds)
	}
	h.notifyAll()
	h.feedbackReady()
	// Deadlines another node created since this node's last sweep (a send's TTL, a lock taken
	// there) are due here too if that node dies: sweep once a poll (SKIP LOCKED keeps it cheap
	// and applies each deadline once).
	if h.timer != nil {
		h.timer.arm(h.now())
	}
}

// notifyAll wakes every WaitSettled to look again.
func (h *Hub) notifyAll() {
	h.waitMu.Lock()
	defer h.waitMu.Unlock()
	for k, w := range h.waiters {
		close(w.ch)
		delete(h.waiters, k)
	}
}
