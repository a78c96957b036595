package hub

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// commitCutter is a TCP proxy in front of PostgreSQL that, when armed, cuts the connection of the
// first transaction that carries its marker at that transaction's COMMIT: after forwarding it (the
// server commits; the hub never hears) or before (nothing is committed). A node losing its
// database mid-commit, on demand.
type commitCutter struct {
	ln     net.Listener
	target string
	marker []byte
	mode   atomic.Int32 // cutAfter, cutBefore, or 0: pass everything
	cuts   atomic.Int32
	// cutStatus: cut the next connection that asks txid_status, before the server sees it
	// (the hub's question after a lost COMMIT answer fails once); then pass everything.
	cutStatus atomic.Bool
	wg        sync.WaitGroup
}

const (
	cutAfter  = 1
	cutBefore = 2
)

func newCommitCutter(t *testing.T, dbURL, marker string) (*commitCutter, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &commitCutter{ln: ln, target: u.Host, marker: []byte(marker)}
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.pipe(c) }()
		}
	}()
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *commitCutter) pipe(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	var cut atomic.Bool // from the cut on, the server's answers are dropped
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		b := make([]byte, 32<<10)
		for {
			n, err := s.Read(b)
			if n > 0 && !cut.Load() {
				c.Write(b[:n])
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	marked := false // the current transaction carries the marker
	for {
		n, err := c.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if bytes.Contains(chunk, []byte("txid_status")) && p.cutStatus.Swap(false) {
				p.cuts.Add(1)
				cut.Store(true)
				c.Close()
				return
			}
			marked = marked || bytes.Contains(chunk, p.marker)
			if isCommit(chunk) {
				if marked && p.mode.Load() != 0 {
					p.cuts.Add(1) // before the hub can hear of it
					cut.Store(true)
					c.Close() // the hub's connection ends with no answer
					if p.mode.Swap(0) == cutAfter {
						// The server gets the COMMIT and then the end of its input, so it
						// commits and exits (closing at once could reset the connection and
						// discard the COMMIT unread).
						s.Write(chunk)
						s.(*net.TCPConn).CloseWrite()
						<-serverDone
					}
					return
				}
				marked = false
			}
			if _, err := s.Write(chunk); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cutHub is a hub on PostgreSQL through a commitCutter for the device cut-dev, registered.
func cutHub(t *testing.T) (*commitCutter, *Hub) {
	t.Helper()
	p, dbURL := newCommitCutter(t, pgtest.DB(t), "cut-dev")
	cfg := testConfig()
	cfg.Store = dbURL
	h := openHub(t, t.TempDir(), cfg)
	mustDevice(t, h, "cut-dev")
	return p, h
}

// isCommit: a frontend message carrying a COMMIT (simple or extended protocol).
func isCommit(chunk []byte) bool {
	return bytes.Contains(bytes.ToLower(chunk), []byte("commit\x00"))
}

// A send whose COMMIT reached PostgreSQL but whose answer was lost with the connection is stored:
// the hub must answer it as sent (201), never ServiceUnavailable, or a sender that retries (as a
// 503 asks) queues the command twice and the board carries it out twice. A send whose COMMIT
// never reached the server is answered ServiceUnavailable saying nothing was stored, and the
// queue holds nothing.
func TestSendCommitAnswerLost(t *testing.T) {
	p, h := cutHub(t)
	ctx := ctxT(t)

	p.mode.Store(cutAfter)
	res, err := h.Send(ctx, "cut-dev", iothub.SendRequest{MessageID: "stored", Ack: iothub.AckFull})
	if n := p.cuts.Load(); n != 1 {
		t.Fatalf("the proxy cut %d commits, want 1 (the test did not exercise the lost answer)", n)
	}
	if err != nil {
		t.Fatalf("send whose commit reached the server: %v; want it answered as sent", err)
	}
	st, err := h.MessageStatus(ctx, "cut-dev", "stored")
	if err != nil || st.SequenceNumber != res.SequenceNumber || st.State != iothub.StateEnqueued {
		t.Fatalf("status of the stored send = %+v, %v; want Enqueued at sequence number %d", st, err, res.SequenceNumber)
	}

	p.mode.Store(cutBefore)
	_, err = h.Send(ctx, "cut-dev", iothub.SendRequest{MessageID: "lost", Ack: iothub.AckFull})
	if n := p.cuts.Load(); n != 2 {
		t.Fatalf("the proxy cut %d commits, want 2", n)
	}
	if !errors.Is(err, ErrStoreUnavailable) || !strings.Contains(err.Error(), "nothing was stored, send it again") {
		t.Fatalf("send whose commit never reached the server: %v; want ServiceUnavailable saying nothing was stored", err)
	}
	if _, err := h.MessageStatus(ctx, "cut-dev", "lost"); !errors.Is(err, ErrMessageNotFound) {
		t.Fatalf("status of the lost send: %v; want not found", err)
	}
	hs, err := h.Status(context.Background())
	if err != nil || hs.QueuedMessageCount != 1 {
		t.Fatalf("queued messages = %d, %v; want 1 (the stored send alone)", hs.QueuedMessageCount, err)
	}
}

// The hub's question after a lost COMMIT answer is retried when the server cannot be asked: a
// status query cut off is not an answer, so a send that was stored is still answered as sent
// (not "may have been stored", which sends the operator to look it up by hand).
func TestSendCommitAnswerLostAndFirstQuestionCut(t *testing.T) {
	p, h := cutHub(t)
	ctx := ctxT(t)

	p.cutStatus.Store(true)
	p.mode.Store(cutAfter)
	res, err := h.Send(ctx, "cut-dev", iothub.SendRequest{MessageID: "stored"})
	if n := p.cuts.Load(); n != 2 || p.cutStatus.Load() {
		t.Fatalf("the proxy cut %d times, status query cut: %v; want the commit's answer and the first question cut", n, !p.cutStatus.Load())
	}
	if err != nil {
		t.Fatalf("send whose commit reached the server, first question cut: %v; want it answered as sent", err)
	}
	st, err := h.MessageStatus(ctx, "cut-dev", "stored")
	if err != nil || st.SequenceNumber != res.SequenceNumber {
		t.Fatalf("status of the stored send = %+v, %v; want it at sequence number %d", st, err, res.SequenceNumber)
	}
}

// What the server says after a lost COMMIT answer, and what the send then was. After a crash the
// server hands out again the transaction ids nothing durable used: "committed" for the send's id
// may be another transaction, so only the message at the send's own sequence number proves it.
func TestSendStoredAfterLostCommit(t *testing.T) {
	const seq = 17
	for _, c := range []struct {
		name            string
		tx              string
		found           bool
		rowSeq          int64
		stored, decided bool
	}{
		{"committed, at its sequence number", txCommitted, true, seq, true, true},
		{"committed, not there: its id was reused after a crash", txCommitted, false, 0, false, true},
		{"committed, an older message with its id: its id was reused", txCommitted, true, seq - 3, false, true},
		{"committed, a newer message with its id: a retry hides it", txCommitted, true, seq + 1, false, false},
		{"rolled back", txAborted, false, 0, false, true},
		{"rolled back although a message with its id is there (an earlier send)", txAborted, true, seq - 1, false, true},
		{"id not handed out since the restart: never durable", txFuture, false, 0, false, true},
		{"its backend has not finished it", txInProgress, true, seq, false, false},
	} {
		stored, decided := sendStored(c.tx, c.found, c.rowSeq, seq)
		if stored != c.stored || decided != c.decided {
			t.Errorf("%s: stored %v decided %v, want %v %v", c.name, stored, decided, c.stored, c.decided)
		}
	}
}
