package hub

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func TestRecoveryAfterReopen(t *testing.T) {
	parallel(t)
	dir := t.TempDir()
	cfg := testConfig()
	h := openHub(t, dir, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m0", Ack: iothub.AckFull})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	exp := time.Now().Add(time.Second)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2", Ack: iothub.AckNegative, ExpiryTimeUTC: &exp})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "") // m0 → feedback
	m1 := c.next(t)                                                 // m1 stays Invisible
	c.next(t)                                                       // m2 too, until the restart
	fb, err := h.ReceiveFeedback(ctxT(t))                           // locked for 60 s, never completed
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := openHub(t, dir, cfg)
	q, err := h2.Queue(context.Background(), "dev1")
	if err != nil || len(q) != 2 || q[0].MessageID != "m1" || q[0].State != iothub.StateEnqueued || q[0].DeliveryCount != 1 {
		t.Fatalf("queue after restart: %+v, %v", q, err)
	}
	// The feedback batch was unlocked by recovery: no need to wait for its 60 s lock.
	fb2, err := h2.ReceiveFeedback(ctxT(t))
	if err != nil || len(fb2.Records) != 1 || fb2.Records[0].OriginalMessageID != "m0" || fb2.LockToken == fb.LockToken {
		t.Fatalf("feedback after restart: %+v, %v", fb2, err)
	}
	if err := h2.CompleteFeedback(context.Background(), fb2.LockToken); err != nil {
		t.Fatal(err)
	}
	wantCode(t, h2.Settle(context.Background(), "dev1", m1.LockToken, iothub.DispositionComplete, ""), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	// m2's TTL timer was rearmed from the stored deadline, with nobody connected.
	if st := waitSettled(t, h2, "dev1", "m2"); st.Outcome != iothub.StatusExpired {
		t.Fatalf("m2 after restart: %+v", st)
	}
	if recs := receiveRecords(t, h2, 1); recs[0].OriginalMessageID != "m2" || recs[0].StatusCode != iothub.StatusExpired {
		t.Fatalf("records %+v", recs)
	}
	c2 := newConn("dev1")
	h2.Attach(c2)
	m := c2.next(t)
	if m.MessageID != "m1" {
		t.Fatalf("redelivered %s", m.MessageID)
	}
	settle(t, h2, "dev1", m, iothub.DispositionComplete, "")
	if st := waitSettled(t, h2, "dev1", "m1"); st.DeliveryCount != 2 {
		t.Fatalf("m1: %+v", st)
	}
}

// A TTL that passed while the hub was down is applied by the time Open returns, before any timer
// fires (the clock is paused) and whatever the first operations arm: an operation that armed a
// later deadline before the first sweep ran used to postpone it to that deadline.
func TestOpenAppliesTTLThatPassedWhileDown(t *testing.T) {
	dir := t.TempDir()
	clk := newManualClock()
	clk.Pause()
	cfg := testConfig()
	cfg.Clock = clk
	h := openHub(t, dir, cfg)
	mustDevice(t, h, "dev1")
	exp := clk.Now().Add(2 * time.Second)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "short", Ack: iothub.AckNegative, ExpiryTimeUTC: &exp})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "long"}) // the default TTL: an hour
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(3 * time.Second) // down past short's TTL
	h2 := openHub(t, dir, cfg)
	if st, err := h2.MessageStatus(context.Background(), "dev1", "short"); err != nil || st.Outcome != iothub.StatusExpired {
		t.Fatalf("short right after Open: %+v, %v: want Expired", st, err)
	}
	if st, err := h2.MessageStatus(context.Background(), "dev1", "long"); err != nil || st.State != iothub.StateEnqueued {
		t.Fatalf("long right after Open: %+v, %v: want Enqueued", st, err)
	}
	if recs := receiveRecords(t, h2, 1); recs[0].OriginalMessageID != "short" || recs[0].StatusCode != iothub.StatusExpired {
		t.Fatalf("records %+v", recs)
	}
}

const crashEnv = "C2D_HUB_CRASH_CHILD"

// TestCrashLosesNothingAcknowledged runs a hub in a child process that sends (and completes, with
// feedback) as fast as it can, printing each acknowledged send and each acknowledged completion;
// kills it with SIGKILL at a random moment; reopens the store and checks that every acknowledged
// send is there, every acknowledged completion is Completed, and no feedback record exists twice.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	parallel(t)
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	h, err := Open(context.Background(), dir, crashConfig(), Events{})
	if err != nil {
		t.Fatal(err)
	}
	mustDevice(t, h, "dev1")
	h.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLosesNothingAcknowledged$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sent, done := map[string]bool{}, map[string]bool{}
	start := time.Now()
	sc := bufio.NewScanner(out)
	killAfter := 50 + rand.IntN(200) // acknowledged lines before the kill: a random moment
	lines := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "sent":
			sent[f[1]] = true
		case "done":
			done[f[1]] = true
		}
		if lines++; lines == killAfter {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	cmd.Wait()
	if lines < killAfter {
		t.Fatalf("child printed only %d lines before exiting", lines)
	}
	t.Logf("killed after %d acknowledged sends and %d acknowledged completions (%v)", len(sent), len(done), time.Since(start))

	h2 := openHub(t, dir, crashConfig())
	ctx := context.Background()
	for id := range sent {
		st, err := h2.MessageStatus(ctx, "dev1", id)
		if err != nil {
			t.Fatalf("acknowledged message %s lost: %v", id, err)
		}
		if done[id] && st.State != iothub.StateCompleted {
			t.Fatalf("acknowledged completion of %s lost: %+v", id, st)
		}
	}
	// Feedback: every completion that committed has exactly one record.
	seen := map[string]int{}
	for {
		fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		b, err := h2.ReceiveFeedback(fctx)
		cancel()
		if err != nil {
			break
		}
		for _, r := range b.Records {
			seen[r.OriginalMessageID]++
		}
		if err := h2.CompleteFeedback(ctx, b.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%d feedback records for %s", n, id)
		}
	}
	for id := range done {
		if seen[id] != 1 {
			t.Fatalf("acknowledged completion of %s has %d feedback records", id, seen[id])
		}
	}
}

func crashConfig() Config {
	c := testConfig()
	c.MaxQueueDepth = 100000
	c.FeedbackInterval = 20 * time.Millisecond
	return c
}

// crashChild is the child side: it never returns normally (the parent kills it).
func crashChild(dir string) {
	h, err := Open(context.Background(), dir, crashConfig(), Events{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	say := func(kind, id string) {
		outMu.Lock()
		fmt.Fprintln(os.Stdout, kind, id)
		outMu.Unlock()
	}
	c := newConn("dev1")
	h.Attach(c)
	go func() {
		for m := range c.ch {
			if err := h.Settle(context.Background(), "dev1", m.LockToken, iothub.DispositionComplete, ""); err == nil {
				say("done", m.MessageID)
			}
		}
	}()
	for w := range 4 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, err := h.Send(context.Background(), "dev1", iothub.SendRequest{MessageID: id, Ack: iothub.AckFull}); err == nil {
					say("sent", id)
				}
			}
		}()
	}
	time.Sleep(60 * time.Second) // the parent kills us long before; this only bounds a stray child
	os.Exit(3)
}

func TestSecondHubOnSameDataDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	h := openHub(t, dir, testConfig())
	if _, err := Open(context.Background(), dir, testConfig(), Events{}); err == nil || !strings.Contains(err.Error(), "in use by another c2d-hub") {
		t.Fatalf("second Open: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "hub.db"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("hub.db mode %v, %v: it holds keys and must be private", fi.Mode(), err)
	}
	h.Close()
	h2 := openHub(t, dir, testConfig())
	h2.Close()
}

// Messages that recovery dead-letters (a delivery in flight at the crash was the last allowed one)
// are reported through Events like any other settle, so /metrics counts them.
func TestRecoveryReportsItsSettles(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.MaxDeliveryCount = 1
	h := openHub(t, dir, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "last-try"})
	c := newConn("dev1")
	h.Attach(c)
	c.next(t) // its only delivery, in flight when the hub stops
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	settled := make(chan iothub.FeedbackStatus, 4)
	h2, err := Open(context.Background(), dir, cfg, Events{
		Settled: func(_ string, o iothub.FeedbackStatus, _ time.Duration) { settled <- o },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if st := waitSettled(t, h2, "dev1", "last-try"); st.Outcome != iothub.StatusDeliveryCountExceeded {
		t.Fatalf("after restart: %+v", st)
	}
	select {
	case o := <-settled:
		if o != iothub.StatusDeliveryCountExceeded {
			t.Fatalf("Settled(%s), want DeliveryCountExceeded", o)
		}
	case <-time.After(waitLimit):
		t.Fatal("no Settled event for the message recovery dead-lettered")
	}
}
