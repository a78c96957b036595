package conn

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Options configure a Client.
type Options struct {
	Device    iothub.DeviceConnectionString
	BrokerURL *url.URL
	// Fallbacks are further brokers (the other nodes of a c2d-hub cluster), tried in order after
	// BrokerURL when a connection attempt fails. The client stays on whichever it connected to.
	Fallbacks []*url.URL
	TLS       *tls.Config // for ssl:// and wss:// brokers (ServerName is set per broker)
	// Extension opts in to c2d's disposition extension (username c2d-ext=dispositions).
	Extension bool
	// ClientType is the DeviceClientType username parameter, e.g. "c2d-agent/1.0.0".
	ClientType string

	KeepAlive      time.Duration
	TokenTTL       time.Duration
	ConnectTimeout time.Duration
	ReconnectMin   time.Duration
	ReconnectMax   time.Duration

	Logger *slog.Logger
	// Deliver receives every delivery, in arrival order, on paho's router goroutine: it must not
	// block. Each delivery must eventually be passed to Settle or Drop.
	Deliver func(*Delivery)
	// Method receives direct-method requests, like Deliver (never blocks; hand off). Nil: the
	// agent does not subscribe to methods.
	Method func(*MethodRequest)
	// Twin subscribes to twin answers so that Report and GetTwin work.
	Twin bool
	// Desired receives desired-properties notifications (the patch with "$version"), like Deliver
	// (never blocks). Needs Twin.
	Desired func(patch []byte)
	// OnState, if set, hears every connection state change.
	OnState func(State)
}

// State is the connection's state.
type State struct {
	Connected bool
	Broker    string
	Err       error  // why the last attempt failed or the connection was lost
	Hint      string // for a failed attempt: the likely cause and the command that checks it (Hint)
}

// Delivery is one device-bound PUBLISH.
type Delivery struct {
	Topic     string
	Message   *iothub.Message // nil when the topic could not be parsed (ParseErr)
	ParseErr  error
	Duplicate bool // MQTT DUP flag: the broker resent it
	Received  time.Time

	msg  paho.Message
	gen  uint64
	slot *slot
}

// LockToken is the extension's lock token ("" from a plain hub).
func (d *Delivery) LockToken() string {
	if d.Message == nil {
		return ""
	}
	return d.Message.LockToken
}

// MessageID is $.mid ("" when absent or unparsable).
func (d *Delivery) MessageID() string {
	if d.Message == nil {
		return ""
	}
	return d.Message.MessageID
}

type slot struct {
	d        *Delivery
	released bool
	ack      bool
}

// generation is one MQTT connection: its deliveries' PUBACK order, and a channel closed when it ends.
type generation struct {
	id     uint64
	client paho.Client
	slots  []*slot
	ended  chan struct{} // closed when the connection is over
	lost   chan error    // paho's connection-lost report
}

// Client is the agent's connection. Run drives it; Settle and Drop are safe from any goroutine.
type Client struct {
	opts     Options
	log      *slog.Logger
	filter   string
	username string
	brokers  []*url.URL   // BrokerURL, then Fallbacks, as paho dials them
	cur      atomic.Int32 // index in brokers of the one used now

	ackMu    sync.Mutex // serialises PUBACK sending (taken before mu)
	mu       sync.Mutex
	gen      *generation
	settling sync.WaitGroup

	connected atomic.Bool
	twin      twinCalls
	heartbeat atomic.Int64 // unix nanos of the run loop's last turn

	peer  *peerCert // the hub's certificate as last seen, for Hint
	probe bool      // Probe's client: clean session, no SUBSCRIBE
}

// New prepares a client; nothing connects until Run.
func New(opts Options) (*Client, error) {
	if opts.Device.ModuleID != "" {
		return nil, errors.New("module identities do not receive cloud-to-device messages")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Deliver == nil {
		return nil, errors.New("conn: Options.Deliver is required")
	}
	c := &Client{
		opts: opts, log: opts.Logger, filter: iothub.DeviceBoundFilter(opts.Device.DeviceID),
		gen: &generation{ended: make(chan struct{}), lost: make(chan error, 1)},
	}
	close(c.gen.ended)
	if opts.TLS != nil {
		c.peer = &peerCert{}
		c.opts.TLS = c.peer.wrap(opts.TLS)
	}

	extra := url.Values{}
	extra.Set(iothub.ParamDeviceClientType, opts.ClientType)
	if opts.Extension {
		extra.Set(iothub.ExtensionParam, iothub.ExtensionDispositions)
	}
	c.username = iothub.FormatUsername(opts.Device.HostName, opts.Device.DeviceID, "", extra)

	for _, u := range append([]*url.URL{opts.BrokerURL}, opts.Fallbacks...) {
		broker := *u
		if (broker.Scheme == "ws" || broker.Scheme == "wss") && (broker.Path == "" || broker.Path == "/") {
			broker.Path = "/$iothub/websocket" // Azure's path; paho sets the "mqtt" subprotocol
		}
		c.brokers = append(c.brokers, &broker)
	}
	return c, nil
}

// newPaho builds a fresh paho client for one connection, its handlers bound to g. A client per
// connection (paho warns that reusing one after Disconnect can race with its goroutines) also means
// nothing from an old connection can leak into a new one.
func (c *Client) newPaho(g *generation) paho.Client {
	handler := func(_ paho.Client, m paho.Message) { c.onPublish(g, m) }
	broker := c.brokers[c.cur.Load()]
	o := paho.NewClientOptions().
		AddBroker(broker.String()).
		SetClientID(iothub.ClientID(c.opts.Device.DeviceID, "")).
		SetProtocolVersion(4).
		SetCleanSession(c.probe).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(true).
		SetAutoAckDisabled(true).
		SetOrderMatters(true). // handlers run in arrival order; ours returns at once
		SetKeepAlive(c.opts.KeepAlive).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(c.opts.ConnectTimeout).
		SetWriteTimeout(c.opts.ConnectTimeout).
		SetCredentialsProvider(func() (string, string) {
			tok, err := c.opts.Device.Token(time.Now(), c.opts.TokenTTL)
			if err != nil {
				c.log.Error("cannot sign SAS token", "err", err)
			}
			return c.username, tok
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case g.lost <- err:
			default:
			}
		}).
		// With a persistent session the broker may deliver before SUBSCRIBE is re-sent.
		SetDefaultPublishHandler(handler)
	if c.opts.TLS != nil && (broker.Scheme == "ssl" || broker.Scheme == "wss") {
		tc := c.opts.TLS.Clone()
		tc.ServerName = broker.Hostname() // each node's certificate is checked for its own name
		o.SetTLSConfig(tc)
	}
	pc := paho.NewClient(o)
	pc.AddRoute(c.filter, handler)
	if c.opts.Method != nil {
		pc.AddRoute(iothub.MethodsFilter, func(_ paho.Client, m paho.Message) { c.onMethod(g, m) })
	}
	if c.opts.Twin {
		pc.AddRoute(twinResponseFilter, func(_ paho.Client, m paho.Message) { c.onTwinResponse(m) })
		pc.AddRoute(twinDesiredFilter, func(_ paho.Client, m paho.Message) { c.onDesired(m) })
	}
	return pc
}

// Connected reports whether the MQTT connection is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Alive reports whether the run loop turned within d (for the systemd watchdog).
func (c *Client) Alive(d time.Duration) bool {
	return time.Since(time.Unix(0, c.heartbeat.Load())) <= d
}

// Broker is where the client connects (or tries to) now.
func (c *Client) Broker() string { return c.brokers[c.cur.Load()].Redacted() }

// nextBroker moves to the next broker of the list after a failed attempt.
func (c *Client) nextBroker() {
	c.cur.Store((c.cur.Load() + 1) % int32(len(c.brokers)))
}

// newGeneration makes the generation (and paho client) of the next connection attempt.
func (c *Client) newGeneration() *generation {
	c.mu.Lock()
	old := c.gen
	g := &generation{id: old.id + 1, ended: make(chan struct{}), lost: make(chan error, 1)}
	g.client = c.newPaho(g)
	c.gen = g
	c.mu.Unlock()
	select {
	case <-old.ended:
	default:
		close(old.ended)
	}
	return g
}

func (c *Client) endGeneration() {
	c.mu.Lock()
	g := c.gen
	g.slots = nil
	c.mu.Unlock()
	select {
	case <-g.ended:
	default:
		close(g.ended)
	}
}

func (c *Client) onPublish(g *generation, m paho.Message) {
	d := &Delivery{Topic: m.Topic(), Duplicate: m.Duplicate(), Received: time.Now(), msg: m}
	dev, msg, err := iothub.ParseDeviceBoundTopic(m.Topic())
	switch {
	case err != nil:
		d.ParseErr = err
	case dev != c.opts.Device.DeviceID:
		d.ParseErr = fmt.Errorf("topic %q is for device %q, not %q", m.Topic(), dev, c.opts.Device.DeviceID)
	default:
		msg.Body = m.Payload()
		d.Message = msg
	}
	c.mu.Lock()
	d.gen = g.id
	d.slot = &slot{d: d}
	if g == c.gen {
		g.slots = append(g.slots, d.slot)
	}
	c.mu.Unlock()
	c.opts.Deliver(d)
}

// release marks d's PUBACK slot and sends every PUBACK now due, in arrival order. ackMu is held
// across collecting and sending, so concurrent releases cannot reorder PUBACKs.
func (c *Client) release(d *Delivery, ack bool) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	c.mu.Lock()
	if d.gen != c.gen.id || d.slot.released {
		c.mu.Unlock()
		return // its connection is gone: the broker redelivers it; the ledger settles that one
	}
	d.slot.released, d.slot.ack = true, ack
	g := c.gen
	var due []paho.Message
	n := 0
	for n < len(g.slots) && g.slots[n].released {
		if g.slots[n].ack {
			due = append(due, g.slots[n].d.msg)
		}
		n++
	}
	g.slots = g.slots[n:]
	c.mu.Unlock()
	for _, m := range due {
		m.Ack()
	}
}

// Drop leaves d unacknowledged (the agent stops before running it; the broker redelivers it to the
// next session) and lets later PUBACKs go.
func (c *Client) Drop(d *Delivery) { c.release(d, false) }

// Settle answers for d: complete, reject (with reason) or abandon. It returns at once; the
// disposition publish and the PUBACK follow in the background.
func (c *Client) Settle(d *Delivery, disp iothub.Disposition, reason string) {
	c.settling.Add(1)
	go func() {
		defer c.settling.Done()
		c.settle(d, disp, reason)
	}()
}

// Flush waits (at most timeout) until every settlement begun so far has published its disposition
// and sent its PUBACK, or given up; the agent calls it before disconnecting on shutdown.
func (c *Client) Flush(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		c.settling.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func (c *Client) settle(d *Delivery, disp iothub.Disposition, reason string) {
	log := c.log.With("mid", d.MessageID(), "disposition", disp)
	if lt := d.LockToken(); lt != "" {
		var body []byte
		if reason != "" {
			body, _ = json.Marshal(iothub.DispositionBody{Reason: truncate(reason)})
		}
		if err := c.publish(d, iothub.DispositionTopic(c.opts.Device.DeviceID, lt, disp), body); err != nil {
			log.Warn("disposition not delivered; the hub will redeliver the message", "err", err)
			c.release(d, false)
			return
		}
		c.release(d, true)
		return
	}
	switch disp {
	case iothub.DispositionComplete:
		c.release(d, true)
	case iothub.DispositionReject:
		topic, payload := iothub.RejectReportEvent(c.opts.Device.DeviceID, d.MessageID(), truncate(reason))
		if err := c.publish(d, topic, payload); err != nil {
			log.Warn("reject report not delivered; the hub will redeliver the message", "err", err)
			c.release(d, false)
			return
		}
		// On a plain hub the PUBACK completes the message; the report carries the refusal.
		c.release(d, true)
	case iothub.DispositionAbandon:
		log.Warn("this hub cannot abandon over MQTT: leaving the message unacknowledged so the hub redelivers it")
		c.release(d, false)
	}
}

// publish sends a QoS 1 message on d's connection and waits for its PUBACK.
func (c *Client) publish(d *Delivery, topic string, payload []byte) error {
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if g.id != d.gen {
		return errors.New("connection lost before settling")
	}
	if payload == nil {
		payload = []byte{} // paho rejects a nil payload
	}
	tok := g.client.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-g.ended:
		return errors.New("connection lost while settling")
	}
}

func truncate(s string) string {
	if len(s) > iothub.MaxReasonLength {
		return s[:iothub.MaxReasonLength]
	}
	return s
}

// Run connects and keeps the connection up until ctx ends, then disconnects. It returns nil after
// a clean stop.
func (c *Client) Run(ctx context.Context) error {
	attempt := 0
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	c.heartbeat.Store(time.Now().UnixNano())
	for {
		if ctx.Err() != nil {
			return nil
		}
		broker := c.Broker()
		c.state(State{Broker: broker})
		c.log.Info("connecting", "broker", broker, "device", c.opts.Device.DeviceID, "extension", c.opts.Extension)
		start := time.Now()
		g := c.newGeneration()
		sessionPresent, err := c.connect(ctx, g)
		if err != nil {
			c.endGeneration()
			if ctx.Err() != nil {
				return nil
			}
			attempt++
			c.nextBroker()
			wait := Backoff(attempt, c.opts.ReconnectMin, c.opts.ReconnectMax, rand.Float64())
			hint := c.Hint(err)
			if hint != "" {
				c.log.Warn("connect failed", "broker", broker, "attempt", attempt, "next", c.Broker(), "retry_in", wait.Round(time.Millisecond), "err", err, "likely", hint)
			} else {
				c.log.Warn("connect failed", "broker", broker, "attempt", attempt, "next", c.Broker(), "retry_in", wait.Round(time.Millisecond), "err", err)
			}
			c.state(State{Broker: broker, Err: err, Hint: hint})
			if !c.sleep(ctx, beat, wait) {
				return nil
			}
			continue
		}
		attempt = 0
		c.connected.Store(true)
		c.log.Info("connected", "broker", broker, "session_present", sessionPresent, "took", time.Since(start).Round(time.Millisecond))
		c.state(State{Connected: true, Broker: broker})

		var renew *time.Timer
		var renewC <-chan time.Time
		if c.opts.Device.SharedAccessSignature == "" {
			renew = time.NewTimer(c.opts.TokenTTL * 4 / 5)
			renewC = renew.C
		}
		reason := c.connectedLoop(ctx, g, beat, renewC)
		if renew != nil {
			renew.Stop()
		}
		c.connected.Store(false)
		c.endGeneration()
		switch {
		case ctx.Err() != nil:
			g.client.Disconnect(250)
			c.log.Info("disconnected", "broker", broker)
			c.state(State{Broker: broker})
			return nil
		case reason == nil: // token renewal
			g.client.Disconnect(250)
			c.log.Info("reconnecting to renew the SAS token", "broker", broker)
		default:
			attempt = 1
			wait := Backoff(attempt, c.opts.ReconnectMin, c.opts.ReconnectMax, rand.Float64())
			c.log.Warn("connection lost", "broker", broker, "retry_in", wait.Round(time.Millisecond), "err", reason)
			c.state(State{Broker: broker, Err: reason})
			if !c.sleep(ctx, beat, wait) {
				return nil
			}
		}
	}
}

// connectedLoop waits while connected; it returns the loss reason, or nil for a token renewal or
// ctx's end.
func (c *Client) connectedLoop(ctx context.Context, g *generation, beat *time.Ticker, renew <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew:
			return nil
		case err := <-g.lost:
			if err == nil {
				err = errors.New("connection closed")
			}
			return err
		case <-beat.C:
			c.heartbeat.Store(time.Now().UnixNano())
		}
	}
}

func (c *Client) connect(ctx context.Context, g *generation) (sessionPresent bool, err error) {
	tok := g.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// Stopping: do not wait for the attempt (paho bounds it by ConnectTimeout); this client is
		// never used again, so close it behind us.
		go func() {
			<-tok.Done()
			if tok.Error() == nil {
				g.client.Disconnect(0)
			}
		}()
		return false, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return false, err
	}
	if ct, ok := tok.(*paho.ConnectToken); ok {
		sessionPresent = ct.SessionPresent()
	}
	// Subscribe on every connection: a broker that lost the session (or a fresh one) needs it, and
	// with a persistent session it is harmless.
	st := g.client.Subscribe(c.filter, 1, nil)
	t := time.NewTimer(c.opts.ConnectTimeout)
	defer t.Stop()
	select {
	case <-st.Done():
	case <-t.C:
		g.client.Disconnect(0)
		return false, fmt.Errorf("subscribe %s: no SUBACK within %s", c.filter, c.opts.ConnectTimeout)
	case <-ctx.Done():
		g.client.Disconnect(0)
		return false, ctx.Err()
	}
	if err := st.Error(); err != nil {
		g.client.Disconnect(0)
		return false, fmt.Errorf("subscribe %s: %w", c.filter, err)
	}
	if sub, ok := st.(*paho.SubscribeToken); ok {
		if q, ok := sub.Result()[c.filter]; ok && q == 0x80 {
			g.client.Disconnect(0)
			return false, fmt.Errorf("subscribe %s: refused by the broker", c.filter)
		}
	}
	c.subscribeMethods(g)
	c.subscribeTwin(g)
	return sessionPresent, nil
}

func (c *Client) sleep(ctx context.Context, beat *time.Ticker, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-beat.C:
			c.heartbeat.Store(time.Now().UnixNano())
		}
	}
}

func (c *Client) state(s State) {
	if c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

// Backoff is the wait before reconnect attempt n (1-based): min·2^(n-1) capped at max, with "equal
// jitter" (half fixed, half random from r ∈ [0,1)) so a fleet that lost its hub does not return in
// lockstep.
func Backoff(n int, min, max time.Duration, r float64) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(r*float64(d/2))
}
