package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// memTwins stands in for cloud/twin.Service: the broker's side of the twin protocol is what these
// tests pin (the service's own is cloud/server's TestTwins).
type memTwins struct {
	mu       sync.Mutex
	body     []byte
	getErr   error
	version  int64
	reportEr error
	patches  []string
}

func (s *memTwins) DeviceGet(_ context.Context, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body, s.getErr
}

func (s *memTwins) DeviceReport(_ context.Context, id string, patch []byte) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patches = append(s.patches, id+" "+string(patch))
	return s.version, s.reportEr
}

// raw returns the next message the device received, whatever its topic.
func (cl *client) raw() paho.Message {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		return m
	case err := <-cl.lost:
		cl.t.Fatalf("connection lost while waiting for a message: %v", err)
	case <-time.After(wait):
		cl.t.Fatalf("no message within %v", wait)
	}
	return nil
}

func (cl *client) expect(topic, body string) {
	cl.t.Helper()
	m := cl.raw()
	if m.Topic() != topic || (body != "*" && string(m.Payload()) != body) {
		cl.t.Fatalf("got %q %q, want %q %q", m.Topic(), m.Payload(), topic, body)
	}
}

func twinEnv(t *testing.T, sink broker.TwinSink) (*env, iothub.Device, *client) {
	t.Helper()
	e := newEnv(t, envOpt{opts: func(o *broker.Options) {
		if sink != nil {
			o.Twins = sink
		}
	}})
	d := e.device("pi-twin")
	cl := e.connect(d, clientOpts{clean: true})
	if g := cl.subscribe("$iothub/twin/res/#", 0); g != 0 {
		t.Fatalf("twin response subscribe granted 0x%02x", g)
	}
	return e, d, cl
}

// A device's twin GET is answered 200 with the twin on its $rid; a reported patch is handed to the
// twin service and answered 204 with the new reported $version. Answers come in request order.
func TestTwinRequestsAnsweredOnTheirRID(t *testing.T) {
	sink := &memTwins{body: []byte(`{"desired":{"$version":1},"reported":{"$version":1}}`), version: 7}
	_, _, cl := twinEnv(t, sink)
	if err := cl.publish("$iothub/twin/GET/?$rid=7c0e", 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := cl.publish("$iothub/twin/PATCH/properties/reported/?$rid=a%20b", 0, []byte(`{"fw":"1.2"}`)); err != nil {
		t.Fatal(err)
	}
	cl.expect("$iothub/twin/res/200/?$rid=7c0e", string(sink.body))
	cl.expect("$iothub/twin/res/204/?$rid=a+b&$version=7", "")
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.patches) != 1 || sink.patches[0] != `pi-twin {"fw":"1.2"}` {
		t.Fatalf("patches handed to the service: %q", sink.patches)
	}
}

// A reported patch whose answer carries no version (0) has no $version in its topic.
func TestTwinAnswerWithoutVersionHasNoVersionParameter(t *testing.T) {
	_, _, cl := twinEnv(t, &memTwins{version: 0})
	if err := cl.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 0, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	cl.expect("$iothub/twin/res/204/?$rid=1", "")
}

func errorCodeOf(t *testing.T, body []byte) int {
	t.Helper()
	var e struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.ErrorCode == 0 || e.Message == "" {
		t.Fatalf("error answer body %q: %v", body, err)
	}
	return e.ErrorCode
}

// A failed twin request is answered with the error's HTTP status in the topic and a JSON body
// naming Azure's error code (Azure's Node SDK takes a bodiless error for success): the service's
// own *iothub.Error as it is, an unknown device as 404001, anything else as 503001 (retry); a hub
// without a twin service answers 503001 too.
func TestTwinErrorsAnsweredWithAzureCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sink   broker.TwinSink
		status string
		code   int
	}{
		{"service error", &memTwins{getErr: &iothub.Error{Code: iothub.CodeThrottlingException, Detail: "slow down"}}, "429", int(iothub.CodeThrottlingException)},
		{"unknown device", &memTwins{getErr: hub.ErrDeviceNotFound}, "404", int(iothub.CodeDeviceNotFound)},
		{"store failure", &memTwins{getErr: errors.New("disk on fire")}, "503", int(iothub.CodeServiceUnavailable)},
		{"no twin service", nil, "503", int(iothub.CodeServiceUnavailable)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, cl := twinEnv(t, tc.sink)
			if err := cl.publish("$iothub/twin/GET/?$rid=9", 0, nil); err != nil {
				t.Fatal(err)
			}
			m := cl.raw()
			if want := "$iothub/twin/res/" + tc.status + "/?$rid=9"; m.Topic() != want {
				t.Fatalf("answer on %q, want %q", m.Topic(), want)
			}
			if got := errorCodeOf(t, m.Payload()); got != tc.code {
				t.Fatalf("errorCode %d, want %d", got, tc.code)
			}
		})
	}
	t.Run("failed report", func(t *testing.T) {
		_, _, cl := twinEnv(t, &memTwins{reportEr: errors.New("disk full")})
		if err := cl.publish("$iothub/twin/PATCH/properties/reported/?$rid=3", 0, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		m := cl.raw()
		if m.Topic() != "$iothub/twin/res/503/?$rid=3" || errorCodeOf(t, m.Payload()) != int(iothub.CodeServiceUnavailable) {
			t.Fatalf("answer %q %q", m.Topic(), m.Payload())
		}
	})
}

// A twin publish with nothing to answer to (no $rid, a malformed query) or to an unknown twin
// topic is dropped without an answer: the next answer the device gets is the next good request's.
func TestTwinRequestsWithoutAnswerAddressAreDropped(t *testing.T) {
	_, _, cl := twinEnv(t, &memTwins{body: []byte(`{}`)})
	for _, topic := range []string{
		"$iothub/twin/GET/",
		"$iothub/twin/GET/?$rid=",
		"$iothub/twin/GET/?$rid=%zz",
		"$iothub/twin/DELETE/?$rid=1",
	} {
		if err := cl.publish(topic, 0, nil); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
	}
	if err := cl.publish("$iothub/twin/GET/?$rid=ok", 0, nil); err != nil {
		t.Fatal(err)
	}
	cl.expect("$iothub/twin/res/200/?$rid=ok", "{}")
}

// Desired-property changes reach a device only once it holds the SUBACK of
// `$iothub/twin/PATCH/properties/desired/#`, and no more after it unsubscribed; a persistent
// session keeps the subscription across a reconnect without subscribing again (Azure's Node SDK
// relies on it).
func TestTwinDesiredNotificationsFollowTheSubscription(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-desired")
	cl := e.connect(d, clientOpts{})
	const desired = "$iothub/twin/PATCH/properties/desired/#"
	topic := "$iothub/twin/PATCH/properties/desired/?$version=2"
	if sent, err := e.b.PublishDesired("pi-desired", topic, []byte(`{"a":1}`)); sent || err != nil {
		t.Fatalf("before subscribing: sent %v, %v", sent, err)
	}
	if g := cl.subscribe(desired, 0); g != 0 {
		t.Fatalf("desired subscribe granted 0x%02x", g)
	}
	// A QoS 1 event's PUBACK: the broker has finished with the SUBACK before it (a subscription
	// would not do as a barrier here: it is another SUBACK).
	if err := cl.publish(iothub.EventsTopic("pi-desired", nil), 1, []byte("barrier")); err != nil {
		t.Fatal(err)
	}
	if sent, err := e.b.PublishDesired("pi-desired", topic, []byte(`{"a":1}`)); !sent || err != nil {
		t.Fatalf("subscribed: sent %v, %v", sent, err)
	}
	cl.expect(topic, `{"a":1}`)

	cl.c.Disconnect(250)
	eventually(t, "the session to end", func() bool { return e.b.Connected() == 0 })
	if sent, _ := e.b.PublishDesired("pi-desired", topic, nil); sent {
		t.Fatal("sent to a device that disconnected")
	}
	cl = e.connect(d, clientOpts{}) // persistent session: the subscription is resumed
	eventually(t, "the resumed session to take desired changes", func() bool {
		sent, err := e.b.PublishDesired("pi-desired", topic, []byte(`{"a":2}`))
		return sent && err == nil
	})
	cl.expect(topic, `{"a":2}`)

	if tok := cl.c.Unsubscribe(desired); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	if sent, _ := e.b.PublishDesired("pi-desired", topic, nil); sent {
		t.Fatal("sent after the device unsubscribed")
	}
}
