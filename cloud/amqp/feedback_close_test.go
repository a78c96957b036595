package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/internal/logtest"
)

// A feedback link waiting for a batch ends quietly: the service closing its receiver (Azure's SDK
// does after each receive, and at shutdown), or the hub shutting down under it, is not a failure
// to read feedback, so the journal gets no warning.
func TestWaitingFeedbackLinkEndsWithoutAWarning(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(t *testing.T, e *env, closeReceiver func())
	}{
		{"the service closes its receiver", func(t *testing.T, e *env, closeReceiver func()) { closeReceiver() }},
		{"the hub shuts down", func(t *testing.T, e *env, closeReceiver func()) {
			if err := e.hub.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &logtest.Recorder{}
			var reads *amqp.FeedbackReads
			e := newEnv(t, hub.Config{FeedbackInterval: time.Hour}, func(o *amqp.Options) {
				o.Logger = logs.Logger()
				reads = amqp.NewFeedbackReads(o.Hub.(*hub.Hub))
				o.Hub = reads
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			fb, err := e.serviceSession(nil).NewReceiver(ctx, "/messages/serviceBound/feedback", nil)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-reads.Reading: // the link is waiting in ReceiveFeedback
			case <-ctx.Done():
				t.Fatal("the feedback link with credit never read feedback")
			}
			c.end(t, e, func() {
				if err := fb.Close(ctx); err != nil {
					t.Fatal(err)
				}
			})
			if err := e.srv.Close(); err != nil { // waits for the link's feedback read to end
				t.Fatal(err)
			}
			if got := logs.With("amqp: receive feedback"); len(got) != 0 {
				t.Fatalf("warned %v; want no warning for a feedback link that ended", got)
			}
		})
	}
}
