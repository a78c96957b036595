package amqp_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/hub/hubtest"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// A feedback link with credit is a receiver that is waiting: a record reaches it without the
// one-hour batch window passing (the hub's timers never fire here).
func TestFeedbackLinkWithCreditGetsRecordsWithoutTheInterval(t *testing.T) {
	e := newEnv(t, hub.Config{FeedbackInterval: time.Hour, Clock: hubtest.StillClock{At: time.Now()}})
	e.device("pi-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := e.serviceSession(nil)
	fb, err := s.NewReceiver(ctx, "/messages/serviceBound/feedback", nil) // credit 1 by default
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Send(ctx, "pi-1", iothub.SendRequest{MessageID: "m-1", Ack: iothub.AckFull}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Purge(ctx, "pi-1"); err != nil { // writes m-1's Purged record
		t.Fatal(err)
	}
	fm, err := fb.Receive(ctx, nil)
	if err != nil {
		t.Fatalf("no feedback on a link with credit: %v", err)
	}
	var recs []iothub.FeedbackRecord
	if err := json.Unmarshal(fm.GetData(), &recs); err != nil || len(recs) != 1 ||
		recs[0].OriginalMessageID != "m-1" || recs[0].StatusCode != iothub.StatusPurged {
		t.Fatalf("feedback %s: %v", fm.GetData(), err)
	}
	if err := fb.AcceptMessage(ctx, fm); err != nil {
		t.Fatal(err)
	}
}

// A feedback link that has used its credit holds no further batch: the next batch goes to the
// receiver that has credit (a batch fetched ahead would stay locked, unseen, for a minute).
func TestFeedbackLinkWithoutCreditLocksNoFurtherBatch(t *testing.T) {
	e := newEnv(t, hub.Config{FeedbackInterval: time.Hour, FeedbackBatchSize: 1, Clock: hubtest.StillClock{At: time.Now()}})
	e.device("pi-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := e.serviceSession(nil)
	record := func(id string) {
		t.Helper()
		if _, err := e.hub.Send(ctx, "pi-1", iothub.SendRequest{MessageID: id, Ack: iothub.AckFull}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.hub.Purge(ctx, "pi-1"); err != nil { // a Purged record: a batch of its own
			t.Fatal(err)
		}
	}
	first := func(fm interface{ GetData() []byte }) string {
		t.Helper()
		var recs []iothub.FeedbackRecord
		if err := json.Unmarshal(fm.GetData(), &recs); err != nil || len(recs) != 1 {
			t.Fatalf("feedback %s: %v", fm.GetData(), err)
		}
		return recs[0].OriginalMessageID
	}
	a, err := s.NewReceiver(ctx, "/messages/serviceBound/feedback", nil) // credit 1
	if err != nil {
		t.Fatal(err)
	}
	record("m-1")
	fa, err := a.Receive(ctx, nil) // not settled: a's credit stays used
	if err != nil || first(fa) != "m-1" {
		t.Fatalf("first receiver: %v", err)
	}
	record("m-2")
	b, err := s.NewReceiver(ctx, "/messages/serviceBound/feedback", nil)
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	defer bcancel()
	fb, err := b.Receive(bctx, nil)
	if err != nil {
		t.Fatalf("second receiver never got m-2's batch (held by the receiver without credit?): %v", err)
	}
	if id := first(fb); id != "m-2" {
		t.Fatalf("second receiver got %s, want m-2", id)
	}
}
