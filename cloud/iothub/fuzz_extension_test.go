package iothub

import (
	"testing"
	"unicode/utf8"
)

// The broker parses these from any connected device, the agent's service-side tools and the CLI
// from the network: no panic, errors that say something, and what parses renders back the same.

func FuzzParseServiceConnectionString(f *testing.F) {
	f.Add("HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + keyA)
	f.Add("HostName=h;SharedAccessKeyName=service;SharedAccessKey=" + keyA + ";SharedAccessKeyName=x")
	f.Add("hostname=h;SharedAccessKeyName=service;SharedAccessKey=%%")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseServiceConnectionString(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		again, err := ParseServiceConnectionString(c.String())
		if err != nil || again != c {
			t.Fatalf("String() %q does not parse back: %+v %v", c.String(), again, err)
		}
	})
}

func FuzzParseDisposition(f *testing.F) {
	f.Add("$c2d/devices/dev1/messages/devicebound/AbC_-12/reject", []byte(`{"reason":"unknown target \"relay9\""}`))
	f.Add("$c2d/devices/dev%2B1/messages/devicebound/t/complete", []byte(""))
	f.Add("$c2d/devices/dev1/messages/devicebound/t/abandon", []byte(`{"reason":`))
	f.Add("$c2d/devices//messages/devicebound//reject", []byte(`[]`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		dev, lt, d, err := ParseDispositionTopic(topic)
		if err == nil {
			if back := DispositionTopic(dev, lt, d); back != topic {
				// Equivalent escapings may differ; the parsed values must survive a round trip.
				dev2, lt2, d2, err := ParseDispositionTopic(back)
				if err != nil || dev2 != dev || lt2 != lt || d2 != d {
					t.Fatalf("%q -> (%q %q %q) -> %q -> (%q %q %q) %v", topic, dev, lt, d, back, dev2, lt2, d2, err)
				}
			}
		}
		b, err := ParseDispositionBody(payload)
		if err != nil {
			return
		}
		if len(b.Reason) > MaxReasonLength || !utf8.ValidString(b.Reason) {
			t.Fatalf("reason kept %d bytes (valid UTF-8: %v)", len(b.Reason), utf8.ValidString(b.Reason))
		}
	})
}

func FuzzParseRejectReport(f *testing.F) {
	topic, body := RejectReportEvent("dev1", "m-1", `unknown target "relay9"`)
	f.Add(topic, body)
	f.Add("devices/dev1/messages/events/c2d-report=reject&c2d-original-mid=x", []byte(`{"originalMessageId":"y"}`))
	f.Add("devices/dev1/messages/events/a=b", []byte(`not json`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		_, bag, err := ParseEventsTopic(topic)
		if err != nil {
			return
		}
		r, ok, err := ParseRejectReport(bag, payload)
		if !ok && (err != nil || r != (RejectReport{})) {
			t.Fatalf("not a report, yet r=%+v err=%v", r, err)
		}
		if ok && err == nil {
			if mid, _ := bag.Get(ReportOriginalMessageProp); mid != r.OriginalMessageID {
				t.Fatalf("accepted a report for %q whose bag says %q", r.OriginalMessageID, mid)
			}
		}
	})
}

func FuzzParseErrorResponse(f *testing.F) {
	f.Add(403, []byte(`{"Message":"ErrorCode:DeviceMaximumQueueDepthExceeded;queue full","errorCode":403004,"code":"DeviceMaximumQueueDepthExceeded","detail":"queue full"}`))
	f.Add(404, []byte(`{"Message":"ErrorCode:DeviceNotFound;Device not found.","ExceptionMessage":"Tracking ID:x"}`))
	f.Add(502, []byte(`<html>bad gateway</html>`))
	f.Add(0, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := ParseErrorResponse(status, body)
		if e == nil {
			t.Fatal("nil error for an error response")
		}
		_ = e.Error()
		_ = e.Response()
	})
}

func FuzzParseMethodTopics(f *testing.F) {
	f.Add("$iothub/methods/res/200/?$rid=1f")
	f.Add("$iothub/methods/POST/state/?$rid=a")
	f.Add("$iothub/methods/res/-1/?$rid=%zz")
	f.Add("$iothub/methods/POST//?$rid=")
	f.Fuzz(func(t *testing.T, topic string) {
		if st, rid, err := ParseMethodResponseTopic(topic); err == nil {
			st2, rid2, err := ParseMethodResponseTopic(MethodResponseTopic(st, rid))
			if err != nil || st2 != st || rid2 != rid {
				t.Fatalf("%q -> %d %q -> %d %q %v", topic, st, rid, st2, rid2, err)
			}
		}
		if name, rid, err := ParseMethodRequestTopic(topic); err == nil {
			name2, rid2, err := ParseMethodRequestTopic(MethodRequestTopic(name, rid))
			if err != nil || name2 != name || rid2 != rid {
				t.Fatalf("%q -> %q %q -> %q %q %v", topic, name, rid, name2, rid2, err)
			}
		}
	})
}
