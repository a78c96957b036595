package server_test

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// TestClusterDesiredChangeFromAnAPIOnlyNode: a node serving only the API (every MQTT listener
// off, so no broker of its own) still gets a desired change to the board whose session is on
// another node, as Azure's notification.
func TestClusterDesiredChangeFromAnAPIOnlyNode(t *testing.T) {
	url := pgtest.DB(t)
	api := newITHub(t, func(c *server.Config) { c.Store, c.NodeID, c.Listen.MQTT = url, "api", server.Off })
	mq := newITHub(t, func(c *server.Config) { c.Store, c.NodeID = url, "mqtt" })
	api.device("pi-1")
	d, err := mq.owner.GetDevice(mq.ctx(), "pi-1")
	if err != nil {
		t.Fatal(err)
	}
	pi := mq.connect(d, devOpts{})
	desired := make(chan paho.Message, 4)
	if st := pi.c.Subscribe("$iothub/twin/PATCH/properties/desired/#", 0, func(_ paho.Client, m paho.Message) { desired <- m }); !st.WaitTimeout(deadline) || st.Error() != nil {
		t.Fatal(st.Error())
	}
	if r := api.do("PATCH", "/twins/pi-1", "iothubowner", `{"properties":{"desired":{"outputs":{"relay1":"on"}}}}`); r.code != 200 {
		t.Fatalf("PATCH through the API-only node: %d %s", r.code, r.body)
	}
	next := func(topic, payload string) {
		t.Helper()
		select {
		case n := <-desired:
			if n.Topic() != topic || string(n.Payload()) != payload {
				t.Fatalf("notification %q %s; want %q %s", n.Topic(), n.Payload(), topic, payload)
			}
		case <-time.After(deadline):
			t.Fatal("the desired change made on the API-only node never reached the board")
		}
	}
	next("$iothub/twin/PATCH/properties/desired/?$version=2", `{"$version":2,"outputs":{"relay1":"on"}}`)

	// A tags-only change is no desired change: the board hears nothing of it, and the next thing
	// it hears is the next desired change.
	if r := api.do("PATCH", "/twins/pi-1", "iothubowner", `{"tags":{"site":"north"}}`); r.code != 200 {
		t.Fatalf("tags PATCH: %d %s", r.code, r.body)
	}
	if r := api.do("PATCH", "/twins/pi-1", "iothubowner", `{"properties":{"desired":{"rate":5}}}`); r.code != 200 {
		t.Fatalf("PATCH: %d %s", r.code, r.body)
	}
	next("$iothub/twin/PATCH/properties/desired/?$version=3", `{"$version":3,"rate":5}`)
}
