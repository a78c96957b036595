package conn

import (
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// MethodRequest is one direct-method call from the cloud. Answer it with Client.Respond; one
// that is never answered times out at the hub.
type MethodRequest struct {
	Name     string
	RID      string
	Payload  []byte // JSON as sent (the hub sends null for none)
	Received time.Time
	ParseErr error // a topic that could not be parsed: answer 400 with it

	gen uint64
}

// onMethod hands a method request to Options.Method and returns (never blocks: paho's handler).
func (c *Client) onMethod(g *generation, m paho.Message) {
	r := &MethodRequest{Payload: m.Payload(), Received: time.Now(), gen: g.id}
	r.Name, r.RID, r.ParseErr = iothub.ParseMethodRequestTopic(m.Topic())
	if r.ParseErr != nil && r.RID == "" {
		c.log.Warn("dropping a method request without a usable $rid", "topic", m.Topic(), "err", r.ParseErr)
		return
	}
	c.opts.Method(r)
}

// Respond answers a method request on the connection it came on (QoS 0, as Azure's SDKs do). A
// request whose connection is gone cannot be answered: the hub has timed it out or will.
func (c *Client) Respond(r *MethodRequest, status int, payload []byte) error {
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if g.id != r.gen {
		return errors.New("connection lost before the method answer")
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	tok := g.client.Publish(iothub.MethodResponseTopic(status, r.RID), 0, false, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("method answer %s: %w", r.RID, err)
		}
		return nil
	case <-g.ended:
		return errors.New("connection lost while answering the method")
	}
}

// subscribeMethods subscribes to direct methods when Options.Method is set. A refusal or a missing
// SUBACK is logged, not fatal: cloud-to-device messages still work without methods.
func (c *Client) subscribeMethods(g *generation) {
	if c.opts.Method == nil {
		return
	}
	st := g.client.Subscribe(iothub.MethodsFilter, 0, nil)
	t := time.NewTimer(c.opts.ConnectTimeout)
	defer t.Stop()
	select {
	case <-st.Done():
	case <-t.C:
		c.log.Warn("no SUBACK for the direct-method subscription; methods may not reach this board", "within", c.opts.ConnectTimeout)
		return
	}
	if err := st.Error(); err != nil {
		c.log.Warn("direct-method subscription failed", "err", err)
		return
	}
	if sub, ok := st.(*paho.SubscribeToken); ok {
		if q, ok := sub.Result()[iothub.MethodsFilter]; ok && q == 0x80 {
			c.log.Warn("the hub refused the direct-method subscription; methods will not reach this board")
		}
	}
}
