package main_test

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestClusterOfProcesses: three c2d-hub processes on one PostgreSQL (started by the test, fsync
// on). A device on node b receives what is sent through node a, --wait through node c sees it
// settle, feedback is read through a and completed through c once; the device connecting to c
// takes it over from b (b drops its session); after c is killed with -9 the device carries on
// through a.
func TestClusterOfProcesses(t *testing.T) {
	pgtest.Need(t)
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	url, err := pg.NewDB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"C2D_HUB_STORE=" + url}
	node := func(name string) *proc {
		data := t.TempDir()
		args := append([]string{"--data", data, "--node-id", name, "--log-level", "warn"}, loopback...)
		return start(t, data, env, args...)
	}
	a, b, c := node("a"), node("b"), node("c")
	ctx := ctxT(t, 90*time.Second)

	// The cluster's policies, from the shared store.
	out, err := exec.Command(hubBin, "connection-string", "--store", url, "--data", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("connection-string --store: %v: %s", err, out)
	}
	owner, err := iothub.ParseServiceConnectionString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	ca, cc := a.client(owner), c.client(owner)
	dev, err := ca.CreateDevice(ctx, "pi-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	onB := connectDevice(t, "tcp://"+b.ep.MQTT, nil, b.ep.HostName, dev, false)

	sent := time.Now()
	if _, err := ca.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull}); err != nil {
		t.Fatal(err)
	}
	if _, m := onB.next(t); m.MessageID != "m1" {
		t.Fatalf("device on b got %s", m.MessageID)
	}
	t.Logf("send through a → delivery through b: %v", time.Since(sent))
	st, err := cc.MessageStatus(ctx, "pi-1", "m1", 20*time.Second)
	if err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("--wait through c: %+v, %v", st, err)
	}
	fb, err := ca.ReceiveFeedback(ctx, 20*time.Second)
	if err != nil || fb == nil || len(fb.Records) != 1 || fb.Records[0].OriginalMessageID != "m1" {
		t.Fatalf("feedback through a: %+v, %v", fb, err)
	}
	if err := cc.CompleteFeedback(ctx, fb.LockToken); err != nil {
		t.Fatalf("complete feedback through c: %v", err)
	}
	if err := ca.CompleteFeedback(ctx, fb.LockToken); err == nil {
		t.Fatal("feedback completed twice")
	}

	// Takeover: the same device connects to c; b drops its session.
	onC := connectDevice(t, "tcp://"+c.ep.MQTT, nil, c.ep.HostName, dev, false)
	deadline := time.Now().Add(5 * time.Second)
	for onB.c.IsConnectionOpen() {
		if time.Now().After(deadline) {
			t.Fatal("node b kept the device's session 5 s after node c took it over")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
	if _, err := b.client(owner).Send(ctx, "pi-1", iothub.SendRequest{MessageID: "m2"}); err != nil {
		t.Fatal(err)
	}
	if _, m := onC.next(t); m.MessageID != "m2" {
		t.Fatalf("device on c got %s", m.MessageID)
	}
	if st, err := ca.MessageStatus(ctx, "pi-1", "m2", 20*time.Second); err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("m2: %+v, %v", st, err)
	}

	// kill -9 the node holding the board; the board reconnects to a and carries on.
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.wait()
	onA := connectDevice(t, "tcp://"+a.ep.MQTT, nil, a.ep.HostName, dev, false)
	if _, err := b.client(owner).Send(ctx, "pi-1", iothub.SendRequest{MessageID: "m3"}); err != nil {
		t.Fatal(err)
	}
	if _, m := onA.next(t); m.MessageID != "m3" {
		t.Fatalf("device on a got %s", m.MessageID)
	}
	if st, err := ca.MessageStatus(ctx, "pi-1", "m3", 20*time.Second); err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("m3: %+v, %v", st, err)
	}
}
