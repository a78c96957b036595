package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// LiteClient is a minimal MQTT 3.1.1 client: CONNECT, SUBSCRIBE, QoS 0/1 PUBLISH both ways, one
// reader goroutine and no keep-alive pinging. It exists so one process can hold ten thousand
// simulated devices (paho runs several goroutines and timers per client) and so the raw-broker
// baselines and the c2d runs use the very same device code.
type LiteClient struct {
	conn net.Conn

	wmu sync.Mutex
	w   *bufio.Writer

	mu      sync.Mutex
	nextID  uint16
	pending map[uint16]chan struct{} // PUBACK / SUBACK waiters by packet id
	err     error

	onMessage func(topic string, payload []byte)
	autoAck   bool
	done      chan struct{}
}

// LiteOptions configure Dial.
type LiteOptions struct {
	ClientID, Username, Password string
	CleanSession                 bool
	KeepAlive                    time.Duration // sent in CONNECT; the client never pings (0 = none)
	// OnMessage runs on the reader goroutine for every PUBLISH received; keep it short.
	OnMessage func(topic string, payload []byte)
	// NoAutoAck leaves QoS 1 PUBLISHes unacknowledged (Ack must be called); default: PUBACK at once,
	// after OnMessage returns.
	NoAutoAck bool
	Timeout   time.Duration // CONNECT answer deadline (default 10s)
}

// ErrConnRefused wraps a CONNACK return code other than 0.
var ErrConnRefused = errors.New("connection refused by broker")

// DialLite connects and waits for CONNACK.
func DialLite(addr string, o LiteOptions) (*LiteClient, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	nc, err := net.DialTimeout("tcp", addr, o.Timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &LiteClient{conn: nc, w: bufio.NewWriterSize(nc, 512), pending: map[uint16]chan struct{}{},
		onMessage: o.OnMessage, autoAck: !o.NoAutoAck, done: make(chan struct{})}
	// CONNECT
	var vh []byte
	vh = appendString(vh, "MQTT")
	flags := byte(0)
	if o.CleanSession {
		flags |= 0x02
	}
	if o.Username != "" {
		flags |= 0x80
	}
	if o.Password != "" {
		flags |= 0x40
	}
	vh = append(vh, 4, flags)
	vh = binary.BigEndian.AppendUint16(vh, uint16(o.KeepAlive/time.Second))
	vh = appendString(vh, o.ClientID)
	if o.Username != "" {
		vh = appendString(vh, o.Username)
	}
	if o.Password != "" {
		vh = appendString(vh, o.Password)
	}
	_ = nc.SetDeadline(time.Now().Add(o.Timeout))
	if err := c.write(0x10, vh); err != nil {
		nc.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(nc, 1024)
	typ, body, err := readPacket(r)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if typ>>4 != 2 || len(body) < 2 {
		nc.Close()
		return nil, fmt.Errorf("expected CONNACK, got packet type %d", typ>>4)
	}
	if body[1] != 0 {
		nc.Close()
		return nil, fmt.Errorf("%w: CONNACK return code %d", ErrConnRefused, body[1])
	}
	_ = nc.SetDeadline(time.Time{})
	go c.readLoop(r)
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func (c *LiteClient) write(header byte, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var fixed [5]byte
	c.w.Write(appendFixedHeader(fixed[:0], header, len(body)))
	c.w.Write(body)
	return c.w.Flush()
}

// appendFixedHeader appends an MQTT fixed header: the packet's first byte and its remaining
// length n in MQTT's variable-length encoding.
func appendFixedHeader(b []byte, header byte, n int) []byte {
	b = append(b, header)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h, body, nil
}

func (c *LiteClient) readLoop(r *bufio.Reader) {
	defer close(c.done)
	for {
		typ, body, err := readPacket(r)
		if err != nil {
			c.fail(err)
			return
		}
		switch typ >> 4 {
		case 3: // PUBLISH
			qos := (typ >> 1) & 3
			if len(body) < 2 {
				c.fail(errors.New("short PUBLISH"))
				return
			}
			tl := int(binary.BigEndian.Uint16(body))
			if len(body) < 2+tl {
				c.fail(errors.New("short PUBLISH topic"))
				return
			}
			topic := string(body[2 : 2+tl])
			rest := body[2+tl:]
			var pid uint16
			if qos > 0 {
				if len(rest) < 2 {
					c.fail(errors.New("short PUBLISH packet id"))
					return
				}
				pid = binary.BigEndian.Uint16(rest)
				rest = rest[2:]
			}
			if c.onMessage != nil {
				c.onMessage(topic, rest)
			}
			if qos > 0 && c.autoAck {
				_ = c.Ack(pid)
			}
		case 4, 9: // PUBACK, SUBACK
			if len(body) < 2 {
				continue
			}
			pid := binary.BigEndian.Uint16(body)
			c.mu.Lock()
			ch := c.pending[pid]
			delete(c.pending, pid)
			c.mu.Unlock()
			if ch != nil {
				close(ch)
			}
		}
	}
}

func (c *LiteClient) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	c.conn.Close()
}

// Err is why the connection ended (nil while it is up).
func (c *LiteClient) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the reader stops (connection closed or failed).
func (c *LiteClient) Done() <-chan struct{} { return c.done }

// Ack sends PUBACK for packet id pid.
func (c *LiteClient) Ack(pid uint16) error {
	return c.write(0x40, binary.BigEndian.AppendUint16(nil, pid))
}

func (c *LiteClient) newID() (uint16, chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, nil, c.err
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			continue
		}
		if _, busy := c.pending[c.nextID]; !busy {
			break
		}
	}
	ch := make(chan struct{})
	c.pending[c.nextID] = ch
	return c.nextID, ch, nil
}

func (c *LiteClient) wait(ch <-chan struct{}, timeout time.Duration, what string) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		if err := c.Err(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%s: no answer within %s", what, timeout)
	}
}

// Subscribe subscribes to one filter and waits for SUBACK.
func (c *LiteClient) Subscribe(filter string, qos byte, timeout time.Duration) error {
	id, ch, err := c.newID()
	if err != nil {
		return err
	}
	b := binary.BigEndian.AppendUint16(nil, id)
	b = appendString(b, filter)
	b = append(b, qos)
	if err := c.write(0x82, b); err != nil {
		return err
	}
	return c.wait(ch, timeout, "SUBSCRIBE "+filter)
}

// PublishAsync sends a PUBLISH; for QoS 1 the returned channel closes on PUBACK (or connection
// loss: check Err).
func (c *LiteClient) PublishAsync(topic string, payload []byte, qos byte) (<-chan struct{}, error) {
	b := appendString(make([]byte, 0, 2+len(topic)+2+len(payload)), topic)
	if qos == 0 {
		b = append(b, payload...)
		ch := make(chan struct{})
		close(ch)
		return ch, c.write(0x30, b)
	}
	id, ch, err := c.newID()
	if err != nil {
		return nil, err
	}
	b = binary.BigEndian.AppendUint16(b, id)
	b = append(b, payload...)
	if err := c.write(0x32, b); err != nil {
		return nil, err
	}
	return ch, nil
}

// Publish sends a PUBLISH and, for QoS 1, waits for its PUBACK.
func (c *LiteClient) Publish(topic string, payload []byte, qos byte, timeout time.Duration) error {
	ch, err := c.PublishAsync(topic, payload, qos)
	if err != nil {
		return err
	}
	return c.wait(ch, timeout, "PUBLISH "+topic)
}

// Close sends DISCONNECT and closes the socket.
func (c *LiteClient) Close() error {
	_ = c.write(0xe0, nil)
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		// The broker closes the connection on DISCONNECT, and the reader may close it first.
		err = nil
	}
	return err
}

// Abort closes the socket without DISCONNECT (a device that vanished).
func (c *LiteClient) Abort() { c.conn.Close(); <-c.done }
