package amqp

import (
	"context"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// cbsCredit is how many put-token requests a client may have outstanding.
const cbsCredit = 32

// cbsRequests is the $cbs target: put-token requests (claims-based security, as Azure Service Bus
// and IoT Hub define it).
type cbsRequests struct{ nodeBase }

// cbsReplies is the $cbs source: the replies to put-token go to it.
type cbsReplies struct{ nodeBase }

func (cbsReplies) detached(l *link) {
	if l.s.c.cbsOut == l {
		l.s.c.cbsOut = nil
	}
}

func (cbsRequests) message(l *link, d *inDelivery) {
	c := l.s.c
	m, err := decodeMessage(d.payload)
	if err != nil {
		l.settleIn(d, &encoding.StateRejected{Error: amqpError(condDecode, "put-token request: %v", err)})
		l.giveCredit(cbsCredit)
		return
	}
	op, _ := m.ApplicationProperties["operation"].(string)
	typ, _ := m.ApplicationProperties["type"].(string)
	name, _ := m.ApplicationProperties["name"].(string)
	var token string
	switch v := m.Value.(type) {
	case string:
		token = v
	case []byte:
		token = string(v)
	default:
		if len(m.Data) > 0 {
			token = string(m.Data[0])
		}
	}
	var msgID any
	if m.Properties != nil {
		msgID = m.Properties.MessageID
	}
	l.settleIn(d, &encoding.StateAccepted{})
	if op != "put-token" {
		l.giveCredit(cbsCredit)
		c.cbsReply(msgID, 400, "operation "+quoteAny(op)+": c2d-hub's $cbs supports put-token only")
		return
	}
	if typ != "servicebus.windows.net:sastoken" && typ != "azure-devices.net:sastoken" {
		l.giveCredit(cbsCredit)
		c.cbsReply(msgID, 400, "token type "+quoteAny(typ)+": want servicebus.windows.net:sastoken")
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g, err := c.srv.verifyToken(ctx, name, token)
		c.locked(func() {
			// Credit comes back once a token is checked: a flood of put-tokens waits its turn.
			l.giveCredit(cbsCredit)
			if err != nil {
				c.log.Info("amqp: put-token refused", "audience", name, "err", err)
				c.srv.tokenEvent(TokenRefused)
				c.cbsReply(msgID, 401, err.Error())
				return
			}
			c.install(g)
			c.cbsReply(msgID, 200, "OK")
		})
	}()
}

// cbsReply answers a put-token: correlation-id is the request's message-id with its type
// unchanged (uuid, string or ulong), status-code an int.
func (c *conn) cbsReply(msgID any, status int32, desc string) {
	if c.cbsOut == nil || c.ending {
		c.log.Debug("amqp: put-token answered, but no $cbs receiver link is attached", "status", status)
		return
	}
	to := "cbs"
	m := &frames.Message{
		Properties: &frames.MessageProperties{CorrelationID: msgID, To: &to},
		ApplicationProperties: map[string]any{
			"status-code":        status,
			"status-description": desc,
		},
	}
	payload, err := encodeMessage(m)
	if err != nil {
		c.log.Error("amqp: encode put-token reply", "err", err)
		return
	}
	c.cbsOut.offer(&outDelivery{tag: nextTag(c), payload: payload, settled: c.cbsOut.sndSettle != encoding.SenderSettleModeUnsettled})
}

// nextTag is a small unique delivery tag for deliveries nobody refers back to.
func nextTag(c *conn) []byte {
	c.tags++
	t := c.tags
	return []byte{byte(t >> 24), byte(t >> 16), byte(t >> 8), byte(t)}
}

func quoteAny(s string) string { return "\"" + s + "\"" }

// nodeBase gives a node no-op methods for the directions it does not use.
type nodeBase struct{}

func (nodeBase) message(l *link, d *inDelivery) {
	l.settleIn(d, &encoding.StateRejected{Error: amqpError(condNotAllowed, "this node does not take messages")})
}
func (nodeBase) credit(*link)                                        {}
func (nodeBase) settled(*link, *outDelivery, encoding.DeliveryState) {}
func (nodeBase) detached(*link)                                      {}
