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
	s := session(t, e.dial(nil))
	if code, desc := putToken(t, s, hostName, e.policyToken("service", time.Hour), "tok-1"); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
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
