package chaos

import (
	"os"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// The invariant checks must be able to fail: each is fed a history that breaks it.

func out(mid string, st iothub.FeedbackStatus, reason string) outcome {
	return outcome{msg: &sentMsg{mid: mid, acked: true}, exists: true,
		status: iothub.MessageStatus{MessageID: mid, Outcome: st, Reason: reason, Ack: iothub.AckFull, State: st.Terminal()}}
}

func wantViolation(t *testing.T, vs []string, substr string) {
	t.Helper()
	for _, v := range vs {
		if strings.Contains(v, substr) {
			return
		}
	}
	t.Errorf("no violation containing %q in %q", substr, vs)
}

func TestFeedbackViolations(t *testing.T) {
	outs := []outcome{out("a", iothub.StatusSuccess, ""), out("b", iothub.StatusRejected, "x")}
	rec := func(mid string, st iothub.FeedbackStatus) iothub.FeedbackRecord {
		return iothub.FeedbackRecord{OriginalMessageID: mid, StatusCode: st}
	}
	ok := map[string][]iothub.FeedbackRecord{"a": {rec("a", iothub.StatusSuccess)}, "b": {rec("b", iothub.StatusRejected)}}
	if vs := feedbackViolations(outs, ok); len(vs) != 0 {
		t.Fatalf("clean history: %q", vs)
	}
	dup := map[string][]iothub.FeedbackRecord{"a": {rec("a", iothub.StatusSuccess), rec("a", iothub.StatusSuccess)}, "b": {rec("b", iothub.StatusRejected)}}
	wantViolation(t, feedbackViolations(outs, dup), "a (Success) has 2")
	lost := map[string][]iothub.FeedbackRecord{"a": {rec("a", iothub.StatusSuccess)}}
	wantViolation(t, feedbackViolations(outs, lost), "b (Rejected) has 0")
	stray := map[string][]iothub.FeedbackRecord{"a": {rec("a", iothub.StatusSuccess)}, "b": {rec("b", iothub.StatusRejected)}, "z": {rec("z", iothub.StatusSuccess)}}
	wantViolation(t, feedbackViolations(outs, stray), "no stray feedback: 1 record(s) for z")
	wrong := map[string][]iothub.FeedbackRecord{"a": {rec("a", iothub.StatusExpired)}, "b": {rec("b", iothub.StatusRejected)}}
	wantViolation(t, feedbackViolations(outs, wrong), "feedback for a says Expired")
}

func TestToggleViolations(t *testing.T) {
	outs := []outcome{out("a", iothub.StatusSuccess, ""), out("b", iothub.StatusSuccess, "")}
	if vs := toggleViolations(outs, 1, 1); len(vs) != 0 {
		t.Fatalf("clean history: %q", vs)
	}
	wantViolation(t, toggleViolations(outs, 2, 1), "3 toggle transitions (2 on, 1 off) for 2 completed")
	wantViolation(t, toggleViolations(outs, 1, 0), "1 toggle transitions (1 on, 0 off) for 2 completed")
	wantViolation(t, toggleViolations(append(outs, out("c", iothub.StatusExpired, "")), 1, 1), "1 toggle(s) ended Expired")
}

func TestPulseViolations(t *testing.T) {
	outs := []outcome{out("a", iothub.StatusSuccess, ""), out("b", iothub.StatusRejected, "interrupted: the agent stopped")}
	for _, on := range []int{1, 2} {
		if vs, n := pulseViolations(outs, on, 1); len(vs) != 0 || n != 1 {
			t.Fatalf("%d pulses started: %q, %d interrupted", on, vs, n)
		}
	}
	vs, _ := pulseViolations(outs, 3, 1)
	wantViolation(t, vs, "3 pulses started for 1 completed + 1 interrupted")
	vs, _ = pulseViolations(outs, 0, 0)
	wantViolation(t, vs, "0 pulses started for 1 completed")
	vs, _ = pulseViolations(append(outs, out("c", iothub.StatusRejected, "hardware error")), 2, 1)
	wantViolation(t, vs, `c ended Rejected ("hardware error")`)
}

func TestEffectViolations(t *testing.T) {
	outs := []outcome{out("a", iothub.StatusSuccess, ""), out("b", iothub.StatusRejected, "cut short: the agent is stopping")}
	if vs, s, c := effectViolations(outs, 2, "pulse"); len(vs) != 0 || s != 1 || c != 1 {
		t.Fatalf("clean history: %q %d %d", vs, s, c)
	}
	vs, _, _ := effectViolations(outs, 3, "pulse")
	wantViolation(t, vs, "3 pulse moves for 1 completed + 1 interrupted or cut short")
	vs, _, _ = effectViolations(append(outs, out("c", iothub.StatusDeliveryCountExceeded, "")), 2, "pulse")
	wantViolation(t, vs, "pulse c ended DeliveryCountExceeded")
}

func TestWithAgentRejections(t *testing.T) {
	log := t.TempDir() + "/agent.log"
	lines := `time=2026-11-25T22:50:11.565Z level=INFO msg=rejected mid=m-2 reason="interrupted: the agent stopped while running this message (started 2026-11-25T22:50:11Z); its outputs were returned to their safe state and it is not run twice"
time=2026-11-25T22:50:12.565Z level=INFO msg=done mid=m-1 took=1ms
`
	if err := os.WriteFile(log, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	outs := withAgentRejections(t, []outcome{out("m-1", iothub.StatusSuccess, ""), out("m-2", iothub.StatusSuccess, "")}, log)
	if outs[0].status.Outcome != iothub.StatusSuccess {
		t.Errorf("m-1: %s", outs[0].status.Outcome)
	}
	if outs[1].status.Outcome != iothub.StatusRejected || !strings.HasPrefix(outs[1].status.Reason, "interrupted: the agent stopped") {
		t.Errorf("m-2: %s %q", outs[1].status.Outcome, outs[1].status.Reason)
	}
}
