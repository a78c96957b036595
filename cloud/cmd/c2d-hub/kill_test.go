package main_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// kill -9 at a random moment of concurrent sends and completions loses no acknowledged message and
// no feedback record, and the restart puts every locked message back in the queue.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	data := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(cfgPath, []byte("queue:\n  max_queue_depth: 10000\nfeedback:\n  interval: 50ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data", data, "--config", cfgPath, "--log-level", "warn"}, loopback...)
	p := start(t, data, nil, args...)
	ctx := ctxT(t, 60*time.Second)
	owner := p.connectionString("iothubowner")
	c := p.client(owner)
	dev, err := c.CreateDevice(ctx, "k", "", "")
	if err != nil {
		t.Fatal(err)
	}
	// A device that completes (PUBACKs) what it gets, so settled messages and feedback records
	// exist when the hub dies.
	d := connectDevice(t, "tcp://"+p.ep.MQTT, nil, p.ep.HostName, dev, false)
	stopDrain := make(chan struct{})
	defer close(stopDrain)
	go func() {
		for {
			select {
			case <-d.msgs:
			case <-stopDrain:
				return
			}
		}
	}()

	killAt := 30 + rand.IntN(120)
	var (
		mu    sync.Mutex
		acked []string
		kill  = make(chan struct{})
		once  sync.Once
		wg    sync.WaitGroup
	)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("s%d-%d", g, i)
				if _, err := c.Send(ctx, "k", iothub.SendRequest{MessageID: id, Ack: iothub.AckFull, Body: []byte(id)}); err != nil {
					return // the hub is gone: this one was never acknowledged
				}
				mu.Lock()
				acked = append(acked, id)
				if len(acked) >= killAt {
					once.Do(func() { close(kill) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-kill:
	case <-ctx.Done():
		t.Fatal("sends did not reach the kill point")
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait()
	wg.Wait()
	d.c.Disconnect(0)
	t.Logf("killed after %d acknowledged sends", len(acked))

	// Restart on the same data: no first-start notice, new ports.
	p2 := start(t, data, nil, args...)
	if out := p2.stdout.String(); out != "" {
		t.Fatalf("restart printed a first-start notice:\n%s", out)
	}
	c2 := p2.client(p2.connectionString("iothubowner"))
	want := map[string]bool{} // settled messages: each must have a feedback record
	states := map[iothub.MessageState]int{}
	for _, id := range acked {
		st, err := c2.MessageStatus(ctx, "k", id, 0)
		if err != nil {
			t.Fatalf("acknowledged message %s lost: %v", id, err)
		}
		states[st.State]++
		switch {
		case st.Outcome != "":
			want[id] = true
		case st.State != iothub.StateEnqueued:
			t.Errorf("message %s is %s after restart with no device connected; want Enqueued", id, st.State)
		}
	}
	t.Logf("after restart: %v", states)
	if len(want) == 0 {
		t.Log("no message was settled before the kill (the device was slower than the senders)")
	}

	seen := map[string]bool{}
	for missing := len(want); missing > 0; {
		fb, err := c2.ReceiveFeedback(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if fb == nil {
			break
		}
		for _, r := range fb.Records {
			if want[r.OriginalMessageID] && !seen[r.OriginalMessageID] {
				seen[r.OriginalMessageID] = true
				missing--
			}
			if r.StatusCode != iothub.StatusSuccess {
				t.Errorf("feedback %+v: want Success", r)
			}
		}
		if err := c2.CompleteFeedback(ctx, fb.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("settled message %s has no feedback record after the restart", id)
		}
	}
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p2.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// kill -9 with every kind of pending state on disk: a rejected message's feedback not yet received,
// a feedback batch received but not completed, a message on its last delivery, one on its first,
// and one whose TTL runs out while the hub is dead. The restarted hub resumes each: the received
// batch is offered again, the last delivery is dead-lettered (DeliveryCountExceeded), the first is
// queued and redelivered, the expiry fires with nobody connected, and every record arrives once.
func TestKill9ResumesLocksTimersAndFeedback(t *testing.T) {
	data := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "hub.yaml")
	cfg := "queue:\n  min_ttl: 1s\n  max_delivery_count: 2\nfeedback:\n  interval: 50ms\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data", data, "--config", cfgPath, "--log-level", "warn"}, loopback...)
	p := start(t, data, nil, args...)
	ctx := ctxT(t, 60*time.Second)
	c := p.client(p.connectionString("iothubowner"))
	dev, err := c.CreateDevice(ctx, "k9", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateDevice(ctx, "offline", "", ""); err != nil {
		t.Fatal(err)
	}
	d := connectDevice(t, "tcp://"+p.ep.MQTT, nil, p.ep.HostName, dev, true)
	settle := func(lt string, disp iothub.Disposition, body string) {
		t.Helper()
		if pt := d.c.Publish(iothub.DispositionTopic("k9", lt, disp), 1, false, []byte(body)); !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
			t.Fatalf("%s: %v", disp, pt.Error())
		}
	}
	send := func(dev, mid string, ack iothub.AckMode, expiry time.Duration) {
		t.Helper()
		req := iothub.SendRequest{MessageID: mid, Ack: ack}
		if expiry > 0 {
			exp := time.Now().Add(expiry)
			req.ExpiryTimeUTC = &exp
		}
		if _, err := c.Send(ctx, dev, req); err != nil {
			t.Fatal(err)
		}
	}

	// A rejected message whose record reaches a feedback batch that is received, never completed.
	send("k9", "rejected", iothub.AckFull, 0)
	_, m := d.next(t)
	settle(m.LockToken, iothub.DispositionReject, `{"reason":"pin 99 not configured"}`)
	fb, err := c.ReceiveFeedback(ctx, 10*time.Second)
	if err != nil || fb == nil || len(fb.Records) != 1 || fb.Records[0].OriginalMessageID != "rejected" {
		t.Fatalf("feedback before the kill: %+v, %v", fb, err)
	}
	// A message on its last delivery (abandoned once, then held), and one on its first.
	send("k9", "last-try", iothub.AckNegative, 0)
	_, m = d.next(t)
	settle(m.LockToken, iothub.DispositionAbandon, "")
	if _, m = d.next(t); m.MessageID != "last-try" {
		t.Fatalf("redelivery: %q", m.MessageID)
	}
	send("k9", "first-try", iothub.AckFull, 0)
	if _, m = d.next(t); m.MessageID != "first-try" {
		t.Fatalf("got %q", m.MessageID)
	}
	// One that expires while the hub is dead (nobody connected).
	send("offline", "expires", iothub.AckNegative, 2*time.Second)
	for _, mid := range []string{"last-try", "first-try"} {
		if st, err := c.MessageStatus(ctx, "k9", mid, 0); err != nil || st.State != iothub.StateInvisible {
			t.Fatalf("%s before the kill: %+v, %v", mid, st, err)
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait()
	d.c.Disconnect(0)

	p2 := start(t, data, nil, args...)
	c2 := p2.client(p2.connectionString("iothubowner"))
	for mid, want := range map[string]iothub.FeedbackStatus{"last-try": iothub.StatusDeliveryCountExceeded, "rejected": iothub.StatusRejected} {
		if st, err := c2.MessageStatus(ctx, "k9", mid, 0); err != nil || st.Outcome != want || st.DeliveryCount == 0 {
			t.Errorf("%s after restart: %+v, %v; want %s", mid, st, err, want)
		}
	}
	if st, err := c2.MessageStatus(ctx, "k9", "first-try", 0); err != nil || st.State != iothub.StateEnqueued || st.DeliveryCount != 1 {
		t.Errorf("first-try after restart: %+v, %v; want Enqueued after 1 delivery", st, err)
	}
	if st, err := c2.MessageStatus(ctx, "offline", "expires", 20*time.Second); err != nil || st.Outcome != iothub.StatusExpired || st.DeliveryCount != 0 {
		t.Errorf("expires after restart: %+v, %v", st, err)
	}
	// The device reconnects: first-try comes again and completes.
	d2 := connectDevice(t, "tcp://"+p2.ep.MQTT, nil, p2.ep.HostName, dev, true)
	_, m = d2.next(t)
	if m.MessageID != "first-try" {
		t.Fatalf("after restart the device got %q", m.MessageID)
	}
	if pt := d2.c.Publish(iothub.DispositionTopic("k9", m.LockToken, iothub.DispositionComplete), 1, false, []byte{}); !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		t.Fatalf("complete: %v", pt.Error())
	}
	if st, err := c2.MessageStatus(ctx, "k9", "first-try", 10*time.Second); err != nil || st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 2 {
		t.Fatalf("first-try: %+v, %v", st, err)
	}

	// Every record once: the batch received before the kill (offered again: its old lock token is
	// gone), then the records settled by the restart and after it.
	want := map[string]iothub.FeedbackStatus{"rejected": iothub.StatusRejected, "last-try": iothub.StatusDeliveryCountExceeded,
		"expires": iothub.StatusExpired, "first-try": iothub.StatusSuccess}
	got := map[string]int{}
	for n := 0; n < len(want); {
		b, err := c2.ReceiveFeedback(ctx, 10*time.Second)
		if err != nil || b == nil {
			t.Fatalf("feedback after restart: %v (have %v)", err, got)
		}
		for _, r := range b.Records {
			n++
			got[r.OriginalMessageID]++
			if r.StatusCode != want[r.OriginalMessageID] {
				t.Errorf("record %+v", r)
			}
			if r.OriginalMessageID == "rejected" && r.Reason != "pin 99 not configured" {
				t.Errorf("rejected's reason after restart: %q", r.Reason)
			}
		}
		if err := c2.CompleteFeedback(ctx, b.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	for mid := range want {
		if got[mid] != 1 {
			t.Errorf("%s: %d records, want 1 (all: %v)", mid, got[mid], got)
		}
	}
	if b, err := c2.ReceiveFeedback(ctx, 500*time.Millisecond); err != nil || b != nil {
		t.Errorf("more feedback after every record: %+v, %v", b, err)
	}
	if err := c2.CompleteFeedback(ctx, fb.LockToken); err == nil {
		t.Error("the pre-kill feedback lock token still completes")
	}
}
