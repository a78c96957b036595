package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// DurableTap relays one MQTT 3.1.1 device's connection to the hub and notes, for every message
// the device settles through the disposition extension, the instant the hub's PUBACK of that
// disposition passes: the hub sends it only once the outcome is durable (docs/protocol.md), so
// that instant is the end of "send → action → complete → durable" for a device whose own
// process the bench cannot instrument (c2d-agent). The hub's settledTimeUtc cannot stand in: it
// is taken when the settle's transaction begins, before its commit, at millisecond resolution.
//
// The tap sits on the measured path: each packet it relays costs one more loopback hop (priced
// in the same run by the raw round trip with its responder behind a tap, row raw-mochi-tapped).
type DurableTap struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	byLock map[string]string // lock token → message id, from deliveries
	byPkt  map[uint16]string // packet id of a disposition publish → message id
	seen   map[string]*TapTimes
	err    error
	wg     sync.WaitGroup
}

// NewDurableTap listens on 127.0.0.1 and relays every connection to upstream (host:port).
func NewDurableTap(upstream string) (*DurableTap, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("durable tap: %w", err)
	}
	t := &DurableTap{ln: ln, upstream: upstream, byLock: map[string]string{}, byPkt: map[uint16]string{},
		seen: map[string]*TapTimes{}}
	t.wg.Add(1)
	go t.accept()
	return t, nil
}

// Addr is the address devices connect to instead of the hub's.
func (t *DurableTap) Addr() string { return t.ln.Addr().String() }

// TapTimes are the instants one message's packets passed the tap: its (first) delivery to the
// device, the device's disposition, and the hub's PUBACK of that disposition (the outcome
// durable). Between them lie the hub's send path, the device's share and the hub's settle.
type TapTimes struct {
	Delivered, Disposed, Durable time.Time
}

// Times returns what the tap saw of message mid; ok is false unless it saw all three packets.
// err is the first relay error if any.
func (t *DurableTap) Times(mid string) (tt TapTimes, ok bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.seen[mid]; p != nil {
		tt = *p
	}
	return tt, !tt.Durable.IsZero(), t.err
}

// Close stops listening and cuts the relayed connections.
func (t *DurableTap) Close() error {
	err := t.ln.Close()
	t.wg.Wait()
	return err
}

func (t *DurableTap) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

func (t *DurableTap) accept() {
	defer t.wg.Done()
	var conns []net.Conn // only this goroutine touches it
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for {
		dev, err := t.ln.Accept()
		if err != nil {
			return
		}
		hub, err := net.Dial("tcp", t.upstream)
		if err != nil {
			t.fail(fmt.Errorf("durable tap: dial hub %s: %w", t.upstream, err))
			_ = dev.Close()
			continue
		}
		for _, c := range []net.Conn{dev, hub} {
			_ = c.(*net.TCPConn).SetNoDelay(true)
		}
		conns = append(conns, dev, hub)
		t.wg.Add(2)
		go t.relay(dev, hub, t.fromDevice)
		go t.relay(hub, dev, t.fromHub)
	}
}

// relay copies MQTT packets from src to dst whole, calling look on each before forwarding it;
// either side closing closes both.
func (t *DurableTap) relay(src, dst net.Conn, look func(typ byte, body []byte, at time.Time)) {
	defer t.wg.Done()
	defer src.Close()
	defer dst.Close()
	r := bufio.NewReaderSize(src, 4096)
	var buf []byte
	for {
		h, body, err := readPacket(r)
		if err != nil {
			return
		}
		look(h, body, time.Now())
		buf = append(appendFixedHeader(buf[:0], h, len(body)), body...)
		if _, err := dst.Write(buf); err != nil {
			return
		}
	}
}

// publishTopic returns a PUBLISH body's topic and packet id (0 at QoS 0).
func publishTopic(h byte, body []byte) (string, uint16, bool) {
	if len(body) < 2 {
		return "", 0, false
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return "", 0, false
	}
	topic := string(body[2 : 2+tl])
	var id uint16
	if (h>>1)&3 > 0 && len(body) >= 4+tl {
		id = binary.BigEndian.Uint16(body[2+tl:])
	}
	return topic, id, true
}

func (t *DurableTap) fromHub(h byte, body []byte, at time.Time) {
	switch h >> 4 {
	case 3: // PUBLISH: a delivery names its message and lock token
		topic, _, ok := publishTopic(h, body)
		if !ok {
			return
		}
		if _, m, err := iothub.ParseDeviceBoundTopic(topic); err == nil && m.LockToken != "" {
			t.mu.Lock()
			t.byLock[m.LockToken] = m.MessageID
			if t.seen[m.MessageID] == nil {
				t.seen[m.MessageID] = &TapTimes{Delivered: at}
			}
			t.mu.Unlock()
		}
	case 4: // PUBACK
		if len(body) < 2 {
			return
		}
		id := binary.BigEndian.Uint16(body)
		t.mu.Lock()
		if mid, ok := t.byPkt[id]; ok {
			delete(t.byPkt, id)
			if p := t.seen[mid]; p != nil && p.Durable.IsZero() {
				p.Durable = at
			}
		}
		t.mu.Unlock()
	}
}

func (t *DurableTap) fromDevice(h byte, body []byte, at time.Time) {
	if h>>4 != 3 {
		return
	}
	topic, id, ok := publishTopic(h, body)
	if !ok || id == 0 {
		return
	}
	_, lt, d, err := iothub.ParseDispositionTopic(topic)
	if err != nil || (d != iothub.DispositionComplete && d != iothub.DispositionReject) {
		return
	}
	t.mu.Lock()
	if mid, ok := t.byLock[lt]; ok {
		delete(t.byLock, lt)
		t.byPkt[id] = mid
		if p := t.seen[mid]; p != nil && p.Disposed.IsZero() {
			p.Disposed = at
		}
	}
	t.mu.Unlock()
}
