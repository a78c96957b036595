package hub

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

const waitLimit = 10 * time.Second // generous under -race on 2 shared cores; never reached when green

// testConfig has short locks and TTL bounds so lifecycle paths run in milliseconds.
func testConfig() Config {
	return Config{
		HostName:         "hub.test",
		MinTTL:           time.Second,
		LockTimeout:      5 * time.Second,
		FeedbackInterval: 50 * time.Millisecond,
	}
}

func openHub(t *testing.T, dir string, cfg Config) *Hub {
	t.Helper()
	h, err := Open(context.Background(), dir, cfg, Events{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newTestHub(t *testing.T, cfg Config) *Hub {
	t.Helper()
	if strings.HasPrefix(t.Name(), onPostgresPrefix) {
		cfg.Store = pgtest.DB(t)
	}
	return openHub(t, t.TempDir(), cfg)
}

// parallel lets a test that mostly waits on real time (a TTL, the retention, a node's timeout)
// run side by side with the others; as a subtest of TestLifecycleOnPostgres it already does.
func parallel(t *testing.T) {
	if !strings.HasPrefix(t.Name(), onPostgresPrefix) {
		t.Parallel()
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func mustDevice(t *testing.T, h *Hub, id string) iothub.Device {
	t.Helper()
	d, created, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: id}, "")
	if err != nil || !created {
		t.Fatalf("PutDevice(%s) = created %v, %v", id, created, err)
	}
	return d
}

func mustSend(t *testing.T, h *Hub, id string, req iothub.SendRequest) iothub.SendResult {
	t.Helper()
	r, err := h.Send(context.Background(), id, req)
	if err != nil {
		t.Fatalf("Send(%s, %s): %v", id, req.MessageID, err)
	}
	return r
}

// recConn is a Conn that records deliveries.
type recConn struct {
	id  string
	ext bool
	ch  chan *iothub.Message

	mu      sync.Mutex
	fail    error
	refused int // deliveries refused with fail
}

func newConn(id string) *recConn {
	return &recConn{id: id, ext: true, ch: make(chan *iothub.Message, 1000)}
}

func (c *recConn) DeviceID() string { return c.id }
func (c *recConn) Extension() bool  { return c.ext }
func (c *recConn) Deliver(m *iothub.Message) error {
	c.mu.Lock()
	err := c.fail
	if err != nil {
		c.refused++
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	cp := *m
	c.ch <- &cp
	return nil
}

// refusals is how many deliveries the connection refused.
func (c *recConn) refusals() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

func (c *recConn) setFail(err error) {
	c.mu.Lock()
	c.fail = err
	c.mu.Unlock()
}

func (c *recConn) next(t *testing.T) *iothub.Message {
	t.Helper()
	select {
	case m := <-c.ch:
		return m
	case <-time.After(waitLimit):
		t.Fatalf("device %s: no delivery within %v", c.id, waitLimit)
		return nil
	}
}

// none asserts that nothing is delivered for d: absence can only be observed over some time.
func (c *recConn) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.ch:
		t.Fatalf("device %s: unexpected delivery of %s", c.id, m.MessageID)
	case <-time.After(d):
	}
}

func settle(t *testing.T, h *Hub, dev string, m *iothub.Message, d iothub.Disposition, reason string) {
	t.Helper()
	if err := h.Settle(context.Background(), dev, m.LockToken, d, reason); err != nil {
		t.Fatalf("Settle(%s %s): %v", m.MessageID, d, err)
	}
}

func waitSettled(t *testing.T, h *Hub, dev, mid string) iothub.MessageStatus {
	t.Helper()
	st, err := h.WaitSettled(ctxT(t), dev, mid)
	if err != nil {
		t.Fatalf("WaitSettled(%s): %v (state %s)", mid, err, st.State)
	}
	return st
}

// receiveRecords collects feedback records until n arrived, completing each batch.
func receiveRecords(t *testing.T, h *Hub, n int) []iothub.FeedbackRecord {
	t.Helper()
	var out []iothub.FeedbackRecord
	for len(out) < n {
		b, err := h.ReceiveFeedback(ctxT(t))
		if err != nil {
			t.Fatalf("ReceiveFeedback after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, b.Records...)
		if err := h.CompleteFeedback(context.Background(), b.LockToken); err != nil {
			t.Fatalf("CompleteFeedback: %v", err)
		}
	}
	return out
}

// noFeedback asserts no further feedback batch appears within d.
func noFeedback(t *testing.T, h *Hub, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	b, err := h.ReceiveFeedback(ctx)
	if err == nil {
		t.Fatalf("unexpected feedback batch: %+v", b.Records)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReceiveFeedback: %v", err)
	}
}

func wantCode(t *testing.T, err error, sentinel error, code iothub.ErrorCode) *iothub.Error {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v: want errors.Is %v", err, sentinel)
	}
	var ie *iothub.Error
	if !errors.As(err, &ie) || ie.Code != code {
		t.Fatalf("error %v: want *iothub.Error code %d", err, code)
	}
	return ie
}

// testPrefix pads a test's lock-token prefix to the length of a real one (lockPrefixLen): the
// store reads a token's sequence number after it (lockSeq).
func testPrefix(s string) string { return s + strings.Repeat("_", lockPrefixLen-len(s)) }

// testToken is the lock token of message seq locked under testPrefix(prefix).
func testToken(prefix string, seq int64) string {
	return testPrefix(prefix) + strconv.FormatInt(seq, 10)
}
