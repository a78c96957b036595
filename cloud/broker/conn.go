package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// ErrNotAttached is returned by Deliver on a session that is not (or no longer) registered with the
// core: not subscribed, unsubscribed, replaced or disconnected.
var ErrNotAttached = errors.New("broker: session not attached")

// errBacklog: the session's write queue is full (the core outran MaxInFlight by far).
var errBacklog = errors.New("broker: session write queue full")

// writeQueue bounds the PUBLISHes waiting for one session's writer. The core keeps at most
// MaxInFlight (default 16) deliveries outstanding per connection, so this is never reached in
// normal operation.
const writeQueue = 256

// conn is one established MQTT session of a device or module: the hub.Conn the core delivers to.
type conn struct {
	b        *Broker
	cl       *mqtt.Client
	deviceID string
	moduleID string
	ext      bool
	auth     hub.AuthRequest // the CONNECT's credentials (reverify)
	log      *slog.Logger

	timer *time.Timer // SAS token expiry

	// The write queue: PUBLISHes waiting for the session's writer, a goroutine that runs only
	// while the queue is not empty (queue.go). An idle session holds no queue and no goroutine.
	wmu      sync.Mutex // never held while taking mu or writing
	wq       []outbound
	wrunning bool
	wstopped bool

	mu        sync.Mutex
	pending   map[uint16]pendingDelivery // packet id of a delivery not yet PUBACKed
	lastPID   uint16
	attached  bool // registered with the core (Attach called, Detach not yet)
	qos0      bool // the device-bound subscription was granted QoS 0: at most once
	ended     bool // disconnected or replaced: never attached again
	attachOn  uint16
	attachQoS byte
	attachSet bool // attach once the SUBACK with packet id attachOn has been written
	meth      methodState
	twin      twinState
}

var _ hub.Conn = (*conn)(nil)

func newConn(b *Broker, cl *mqtt.Client, info authInfo) *conn {
	c := &conn{
		b:        b,
		cl:       cl,
		deviceID: info.DeviceID,
		moduleID: info.ModuleID,
		auth:     info.req,
		ext:      info.Extension,
		pending:  map[uint16]pendingDelivery{},
	}
	c.log = slog.New(limitedHandler{b.log.Handler(), b.logLimits.get(c.deviceID + "/" + c.moduleID)}).With("device", c.deviceID, "client", cl.ID, "remote", cl.Net.Remote)
	if c.moduleID != "" {
		c.log = c.log.With("module", c.moduleID)
	}
	return c
}

// DeviceID is the connected device.
func (c *conn) DeviceID() string { return c.deviceID }

// Extension reports whether the device opted into explicit dispositions.
func (c *conn) Extension() bool { return c.ext }

// Deliver queues one QoS 1 PUBLISH for this session alone and returns; the session's writer puts
// it on the wire. The packet id is the broker's (see doc.go for why not mochi's inflight store).
// The lock token travels in the topic only for extension connections; for the others it is kept
// here, packet id → lock token, so that the PUBACK completes the message.
func (c *conn) Deliver(m *iothub.Message) error {
	topic := iothub.DeliveryTopic(c.deviceID, m, c.ext)
	if len(topic) > iothub.MaxTopicLength {
		// The hub refuses such messages at send; never write a 16-bit length that wraps.
		return fmt.Errorf("deliver message %q to %s: topic is %d bytes, beyond MQTT's %d", m.MessageID, c.deviceID, len(topic), iothub.MaxTopicLength)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     m.Body,
		Created:     time.Now().Unix(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.attached {
		return fmt.Errorf("deliver message %q to %s: %w", m.MessageID, c.deviceID, ErrNotAttached)
	}
	if c.qos0 {
		// A QoS 0 subscriber gets no PUBACK to give: the message is completed once written
		// (at most once, what the device asked for).
		pk.FixedHeader.Qos = 0
		if !c.enqueue(outbound{pk: pk, completeOnWrite: m.LockToken}) {
			return fmt.Errorf("deliver message %q to %s: %w", m.MessageID, c.deviceID, errBacklog)
		}
		return nil
	}
	pid, ok := c.nextPID()
	if !ok {
		return fmt.Errorf("deliver message %q to %s: all 65535 packet ids are awaiting PUBACK", m.MessageID, c.deviceID)
	}
	pk.PacketID = pid
	c.pending[pid] = pendingDelivery{lockToken: m.LockToken, messageID: m.MessageID}
	if !c.enqueue(outbound{pk: pk}) {
		delete(c.pending, pid)
		return fmt.Errorf("deliver message %q to %s: %w", m.MessageID, c.deviceID, errBacklog)
	}
	c.lastPID = pid
	return nil
}

// pendingDelivery is a delivery awaiting its PUBACK.
type pendingDelivery struct {
	lockToken string
	messageID string // for a reject report (docs/protocol.md §7) that names it
}

// outbound is one queued delivery.
type outbound struct {
	pk              packets.Packet
	completeOnWrite string // QoS 0: the lock token to complete once the packet is written
}

// nextPID returns a packet id (1–65535) no outstanding delivery uses. c.mu held.
func (c *conn) nextPID() (uint16, bool) {
	id := c.lastPID
	for range 65535 {
		id++
		if id == 0 {
			id = 1
		}
		if _, used := c.pending[id]; !used {
			return id, true
		}
	}
	return 0, false
}

// acked takes the delivery a PUBACK acknowledges.
func (c *conn) acked(pid uint16) (lockToken string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[pid]
	delete(c.pending, pid)
	return p.lockToken, ok
}

// reported takes the unacknowledged delivery of message id mid, which the device reports it
// refused; its PUBACK, which follows the report, is then ignored.
func (c *conn) reported(mid string) (lockToken string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for pid, p := range c.pending {
		if mid != "" && p.messageID == mid {
			delete(c.pending, pid)
			return p.lockToken, true
		}
	}
	return "", false
}

// forget drops the deliveries of a lock token the device settled explicitly (a later PUBACK of
// them is then ignored).
func (c *conn) forget(lockToken string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for pid, p := range c.pending {
		if p.lockToken == lockToken {
			delete(c.pending, pid)
		}
	}
}

// connOf returns the established session of a mochi client.
func (b *Broker) connOf(cl *mqtt.Client) *conn {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.conns[cl]
}

// establish registers a new session. A previous session of the same device (mochi has already
// disconnected it on takeover) is detached from the core first, so the core always sees
// Detach(old) before Attach(new) whatever order the two connections' goroutines run in.
func (b *Broker) establish(cl *mqtt.Client, info authInfo) *conn {
	c := newConn(b, cl, info)
	if expiry := info.expiry; !expiry.IsZero() {
		// The closure keeps only the expiry, not the CONNECT's credentials in info.
		c.timer = time.AfterFunc(time.Until(expiry), func() {
			c.log.Info("SAS token expired; disconnecting (the device reconnects with a new token)",
				"expired", expiry.UTC().Format(time.RFC3339))
			b.kick(cl, packets.ErrNotAuthorized)
		})
	}
	b.life.Lock()
	defer b.life.Unlock()
	b.mu.Lock()
	b.conns[cl] = c
	// Sessions of one client id can reach this point in any order (each runs on its own
	// connection's goroutine, and this one may have waited for the lock behind a slow Attach):
	// only the session mochi holds as the client id's current one may take the device over. A
	// session already replaced is registered (for OnDisconnect) but never attached.
	if cur, ok := b.srv.Clients.Get(cl.ID); !ok || cur != cl || cl.Closed() {
		c.ended = true
		b.mu.Unlock()
		c.log.Info("session replaced before it was established")
		cl.Stop(packets.ErrSessionTakenOver)
		return c
	}
	var old *conn
	if c.moduleID == "" {
		old = b.devices[c.deviceID]
		b.devices[c.deviceID] = c
	}
	b.mu.Unlock()
	if b.credGen.Load() != info.gen {
		// Keys changed since this CONNECT was authenticated, and the re-check of live sessions
		// may have taken its list before this one was registered: check it again (reverify.go).
		go b.recheck([]*conn{c})
	}
	if old != nil {
		old.log.Info("session replaced by a new connection of the same device", "new_remote", cl.Net.Remote)
		b.retire(old)
		old.cl.Stop(packets.ErrSessionTakenOver)
	}
	return c
}

// attach registers the session with the core, unless it is already attached, has ended or has
// been replaced.
func (b *Broker) attach(c *conn, qos byte) {
	b.life.Lock()
	defer b.life.Unlock()
	c.mu.Lock()
	if c.ended || c.cl.Closed() {
		c.mu.Unlock()
		return
	}
	c.qos0 = qos == 0 // a repeated SUBSCRIBE may change the QoS of an attached session
	if c.attached {
		c.mu.Unlock()
		return
	}
	c.attached = true
	c.mu.Unlock()
	c.log.Info("device subscribed; delivering its queue", "extension", c.ext, "qos", qos)
	b.core.Attach(c)
}

// detach unregisters the session from the core (the device unsubscribed); it may attach again.
func (b *Broker) detach(c *conn) {
	b.life.Lock()
	defer b.life.Unlock()
	b.detachLocked(c)
}

// detachLocked: b.life held. Deliver refuses from the moment attached is false, so nothing is
// written that the core is about to requeue.
func (b *Broker) detachLocked(c *conn) {
	c.mu.Lock()
	was := c.attached
	c.attached = false
	c.mu.Unlock()
	if was {
		b.core.Detach(c)
	}
}

// retire ends a session for good: detached, never attached again. b.life held.
func (b *Broker) retire(c *conn) {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	b.detachLocked(c)
}

// endSession is the disconnect path: retire, unregister, stop the writer and the expiry timer.
func (b *Broker) endSession(c *conn, err error) {
	b.life.Lock()
	b.retire(c)
	b.mu.Lock()
	_, known := b.conns[c.cl]
	delete(b.conns, c.cl)
	if b.devices[c.deviceID] == c {
		delete(b.devices, c.deviceID)
	}
	b.mu.Unlock()
	b.life.Unlock()
	if !known {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.stopWriter()
	c.log.Info("device disconnected", "reason", errString(err))
	if f := b.opts.Events.Disconnected; f != nil {
		f(c.deviceID, c.moduleID, err)
	}
}

func errString(err error) string {
	if err == nil {
		return "client disconnected"
	}
	return err.Error()
}
