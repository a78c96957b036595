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
