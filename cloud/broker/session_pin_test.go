package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// An operator reading the journal tells a module's session from its device's: a module's lines
// name the module, a device's lines carry no module field at all.
func TestSessionLogNamesTheModule(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("gw")
	e.connect(d, clientOpts{})
	tok, err := iothub.NewSASToken(iothub.DeviceResource(testHost, "gw", "sensor"), d.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e.connect(d, clientOpts{clientID: "gw/sensor", username: iothub.FormatUsername(testHost, "gw", "sensor", nil), password: tok})
	connected := func(client string) string {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, `msg="device connected"`) && strings.Contains(l, " client="+client+" ") {
				return l
			}
		}
		return ""
	}
	eventually(t, "both sessions logged as connected", func() bool { return connected("gw") != "" && connected("gw/sensor") != "" })
	if l := connected("gw/sensor"); !strings.Contains(l, " module=sensor") {
		t.Errorf("the module's line does not name the module:\n%s", l)
	}
	if l := connected("gw"); strings.Contains(l, "module=") {
		t.Errorf("the device's line has a module field:\n%s", l)
	}
}

// A device in Azure's dialect that reports refusing a message it has already acknowledged changes
// nothing — in particular not another message it has received and not yet acknowledged, which
// its PUBACK then completes (docs/protocol.md §7).
func TestRejectReportForAnAckedMessageLeavesThePendingOneAlone(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-late")
	cl := e.connect(d, clientOpts{manualAck: true})
	cl.subscribeC2D("pi-late")
	first := e.send("pi-late", iothub.SendRequest{Ack: iothub.AckFull})
	m1, msg1 := cl.next()
	if msg1.MessageID != first.MessageID {
		t.Fatalf("got %q, want %q", msg1.MessageID, first.MessageID)
	}
	m1.Ack()
	if st := e.settled("pi-late", first.MessageID); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("first message: %+v", st)
	}

	second := e.send("pi-late", iothub.SendRequest{Ack: iothub.AckFull})
	m2, msg2 := cl.next() // delivered, not yet acknowledged
	if msg2.MessageID != second.MessageID {
		t.Fatalf("got %q, want %q", msg2.MessageID, second.MessageID)
	}
	topic, payload := iothub.RejectReportEvent("pi-late", first.MessageID, "changed my mind")
	if err := cl.publish(topic, 1, payload); err != nil {
		t.Fatal(err)
	}
	cl.barrier()
	if st := e.status("pi-late", second.MessageID); st.State != iothub.StateInvisible {
		t.Fatalf("a report naming another message settled the pending one: %+v", st)
	}
	m2.Ack()
	if st := e.settled("pi-late", second.MessageID); st.Outcome != iothub.StatusSuccess || st.Reason != "" {
		t.Fatalf("pending message after a report naming another one: %+v, want Success", st)
	}
}
