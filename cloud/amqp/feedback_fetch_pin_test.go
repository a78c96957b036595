package amqp

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// FeedbackReads is the hub, counting the feedback reads the AMQP side starts and telling of the
// first one not yet taken from Reading (exported for the package's external tests too).
type FeedbackReads struct {
	*hub.Hub
	reads   atomic.Int32
	Reading chan struct{}
}

func NewFeedbackReads(h *hub.Hub) *FeedbackReads {
	return &FeedbackReads{Hub: h, Reading: make(chan struct{}, 1)}
}

func (c *FeedbackReads) ReceiveFeedback(ctx context.Context) (*iothub.FeedbackBatch, error) {
	c.reads.Add(1)
	select {
	case c.Reading <- struct{}{}:
	default:
	}
	return c.Hub.ReceiveFeedback(ctx)
}

// A feedback link reads one batch at a time: a flow that arrives while a read waits (a peer
// re-sending its credit, or echoing) starts no second read, which would lock a second batch that
// the link has no credit to deliver, unseen by any other receiver for the feedback lock's minute.
func TestFeedbackFlowDuringAReadStartsNoSecondRead(t *testing.T) {
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: "pin.example", FeedbackInterval: time.Hour}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ch := NewFeedbackReads(h)
	srv := New(Options{Hub: ch})
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := newConn(srv, a)
	s := newSession(c, 0, 0, &frames.PerformBegin{IncomingWindow: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	f := &feedbackSource{ctx: ctx, cancel: cancel, locked: map[string]bool{}}
	l := &link{s: s, node: f, role: encoding.RoleSender, localHandle: 1, credit: 1}

	c.locked(func() { f.credit(l) }) // the peer's first flow
	select {
	case <-ch.Reading:
	case <-time.After(20 * time.Second):
		t.Fatal("a feedback link with credit 1 did not read feedback")
	}
	c.locked(func() { f.credit(l) }) // the same credit again, the read still waiting
	cancel()
	srv.wg.Wait() // every read the link started has ended
	if n := ch.reads.Load(); n != 1 {
		t.Fatalf("%d feedback reads for one credit; want 1", n)
	}
}
