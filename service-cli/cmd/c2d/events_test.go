package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// c2d events shows what a device publishes — $.ct, properties, body — and the agent's reject
// report format; --follow prints events as they arrive and ends cleanly on Ctrl-C.
func TestEvents(t *testing.T) {
	id := newDevice(t, "events")
	d := connectDevice(t, id, false)
	f := start(t, "events", "--follow", "--device", id, "-o", "json")
	// The follower starts "from now on": publish until it has seen one (it may join late).
	bag := iothub.PropertyBag{{Name: iothub.PropContentType, Value: "application/json"}, {Name: iothub.PropMessageID, Value: "ev-1"}}
	bag = append(bag, iothub.RejectReportBag("m-41")...)
	body := `{"originalMessageId":"m-41","disposition":"reject","reason":"unknown target \"relay9\""}`
	eventually(t, 20*time.Second, "c2d events --follow prints the device's event", func() bool {
		tk := d.c.Publish(iothub.EventsTopic(id, bag), 1, false, body)
		tk.WaitTimeout(5 * time.Second)
		return strings.Contains(f.stdout.String(), `"ev-1"`)
	})
	if err := f.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := f.wait(t)
	if r.code != 0 {
		t.Fatalf("events --follow after SIGINT: %s", r)
	}
	var ev iothub.DeviceEvent
	if err := json.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &ev); err != nil {
		t.Fatalf("events --follow -o json line: %v\n%s", err, r.stdout)
	}
	want := map[string]string{}
	for _, p := range ev.Properties {
		want[p.Name] = p.Value
	}
	if ev.DeviceID != id || ev.ContentType != "application/json" || ev.MessageID != "ev-1" || string(ev.Body) != body ||
		want["c2d-report"] != "reject" || want["c2d-original-mid"] != "m-41" || ev.EnqueuedTimeUTC.IsZero() {
		t.Errorf("event: %+v", ev)
	}
	// Without --follow: what the hub holds, as text, one line per event.
	out := must(t, 0, "events", "--device", id).stdout
	if !strings.Contains(out, id+"  $.mid=ev-1 $.ct=application/json $.ce=utf-8 c2d-report=reject c2d-original-mid=m-41  "+body) {
		t.Errorf("events text:\n%s", out)
	}
	if out := must(t, 0, "events", "--device", uniq("nobody")).stdout; !strings.Contains(out, "c2d events --follow") {
		t.Errorf("no events: %q", out)
	}
}
