package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/hub/hubtest"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// A long-polling GET /messages/serviceBound/feedback gets a record as soon as it exists, not
// after the (here one-hour, never firing) batch window: 200 with the record, not 204 at the
// end of the wait.
func TestFeedbackLongPollGetsRecordWithoutTheInterval(t *testing.T) {
	e := newEnvConfig(t, hub.Config{FeedbackInterval: time.Hour, Clock: hubtest.StillClock{At: time.Now()}})
	owner := e.token("service", time.Hour)
	e.do("PUT", "/devices/d", e.token("iothubowner", time.Hour), map[string]any{}, nil)
	type result struct {
		code int
		body []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		req, err := http.NewRequest("GET", e.srv.URL+"/messages/serviceBound/feedback?wait=10s", nil)
		if err != nil {
			got <- result{err: err}
			return
		}
		req.Header.Set("Authorization", owner)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, b, err}
	}()
	if a := e.do("POST", "/devices/d/messages/devicebound", owner, iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull}, nil); a.code != http.StatusCreated {
		t.Fatalf("send: %d %s", a.code, a.body)
	}
	if a := e.do("DELETE", "/devices/d/commands", owner, nil, nil); a.code != http.StatusOK { // purge: m1's Purged record
		t.Fatalf("purge: %d %s", a.code, a.body)
	}
	r := <-got
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("long poll: %d %s %v, want 200 with the record", r.code, r.body, r.err)
	}
	var recs []iothub.FeedbackRecord
	if err := json.Unmarshal(r.body, &recs); err != nil || len(recs) != 1 || recs[0].OriginalMessageID != "m1" || recs[0].StatusCode != iothub.StatusPurged {
		t.Fatalf("records %s: %v", r.body, err)
	}
}
