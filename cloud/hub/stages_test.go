package hub

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// stageLog records Events.Stage calls.
type stageLog struct {
	mu sync.Mutex
	n  map[Stage]int
	d  map[Stage]time.Duration
}

func (l *stageLog) record(s Stage, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[s]++
	l.d[s] += d
}

func (l *stageLog) counts() map[Stage]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[Stage]int{}
	for k, v := range l.n {
		out[k] = v
	}
	return out
}

// Each hub stage of a command's path is reported once per command it carries: the send's
// commit, the delivery, the settle — for every outcome, and only for a settle that took effect —
// and the feedback stage once per receive that waited for the hub.
func TestStagesReportEachStepOfACommand(t *testing.T) {
	log := &stageLog{n: map[Stage]int{}, d: map[Stage]time.Duration{}}
	h, err := Open(context.Background(), t.TempDir(), testConfig(), Events{Stage: log.record})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i, d := range []iothub.Disposition{iothub.DispositionComplete, iothub.DispositionReject, iothub.DispositionAbandon} {
		mid := string(rune('a' + i))
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull})
		m := c.next(t)
		settle(t, h, "dev1", m, d, "why")
		if d == iothub.DispositionAbandon {
			settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
		}
		waitSettled(t, h, "dev1", mid)
	}
	// A settle that fails (the lock is gone) is not a stage of any command.
	if err := h.Settle(context.Background(), "dev1", "no-such-token", iothub.DispositionComplete, ""); err == nil {
		t.Fatal("settle of an unknown lock token succeeded")
	}
	// Sends refused before the store is touched are not commits either.
	if _, err := h.Send(context.Background(), "dev1", iothub.SendRequest{Ack: "sometimes"}); err == nil {
		t.Fatal("send with a bad ack succeeded")
	}
	// Their three records were pending when this receive came: it did not wait for the hub.
	if recs := receiveRecords(t, h, 3); len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	if n := log.counts()[StageFeedback]; n != 0 {
		t.Fatalf("a receive that found its records at once reported %s %d times", StageFeedback, n)
	}
	// A receiver already waiting is woken by the settle and reports the feedback stage.
	got := feedbackReceiver(t, h)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "d", Ack: iothub.AckFull})
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	select {
	case b := <-got:
		if b == nil || len(b.Records) != 1 || b.Records[0].OriginalMessageID != "d" {
			t.Fatalf("waiting receiver got %+v", b)
		}
	case <-time.After(waitLimit):
		t.Fatal("the waiting receiver got nothing")
	}
	counts := log.counts()
	want := map[Stage]int{StageCommit: 4, StageDeliver: 5, StageSettle: 5, StageFeedback: 1}
	for _, s := range []Stage{StageCommit, StageDeliver, StageSettle, StageFeedback} {
		if counts[s] != want[s] {
			t.Errorf("stage %s reported %d times, want %d (all: %v)", s, counts[s], want[s], counts)
		}
	}
	if counts[StageDecodeAuth] != 0 {
		t.Errorf("the hub reported %s, which is the API's (%v)", StageDecodeAuth, counts)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for s, d := range log.d {
		if d <= 0 {
			t.Errorf("stage %s took %v in total: want a positive duration", s, d)
		}
	}
}
