package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// AMQPSender is a service's sender link to /messages/devicebound, opened the way Azure's service
// SDKs open it: plain AMQP, a session, a SAS token put on $cbs, then the link. Send returns once
// the hub settled the transfer (accepted: the message is durable), so concurrent Sends on one
// link are that many unsettled transfers in flight.
type AMQPSender struct {
	conn *goamqp.Conn
	snd  *goamqp.Sender
}

// DialAMQPSender opens an AMQPSender on the hub's plain AMQP listener addr with cs's policy.
func DialAMQPSender(ctx context.Context, addr string, cs iothub.ServiceConnectionString) (*AMQPSender, error) {
	tok, err := cs.Token(time.Now(), time.Hour)
	if err != nil {
		return nil, fmt.Errorf("amqp sender: token: %w", err)
	}
	conn, err := goamqp.Dial(ctx, "amqp://"+addr, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp sender: dial %s: %w", addr, err)
	}
	fail := func(what string, err error) (*AMQPSender, error) {
		conn.Close()
		return nil, fmt.Errorf("amqp sender %s: %s: %w", addr, what, err)
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return fail("session", err)
	}
	if err := PutCBSToken(ctx, sess, cs.HostName, tok); err != nil {
		return fail("$cbs", err)
	}
	snd, err := sess.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		return fail("/messages/devicebound sender", err)
	}
	return &AMQPSender{conn: conn, snd: snd}, nil
}

// PutCBSToken puts a SAS token for audience on sess's connection the way Azure's SDKs do (a
// put-token request on $cbs) and checks the answer.
func PutCBSToken(ctx context.Context, sess *goamqp.Session, audience, tok string) error {
	cbsOut, err := sess.NewSender(ctx, "$cbs", nil)
	if err != nil {
		return fmt.Errorf("$cbs sender: %w", err)
	}
	cbsIn, err := sess.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		return fmt.Errorf("$cbs receiver: %w", err)
	}
	replyTo := "cbs"
	if err := cbsOut.Send(ctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: "1", ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience},
		Value:                 tok,
	}, nil); err != nil {
		return fmt.Errorf("put-token: %w", err)
	}
	rep, err := cbsIn.Receive(ctx, nil)
	if err != nil {
		return fmt.Errorf("put-token reply: %w", err)
	}
	if err := cbsIn.AcceptMessage(ctx, rep); err != nil {
		return fmt.Errorf("put-token reply: %w", err)
	}
	if code := rep.ApplicationProperties["status-code"]; code != int32(200) {
		return fmt.Errorf("put-token refused: status-code %v, %v", code, rep.ApplicationProperties["status-description"])
	}
	return nil
}

// Send sends one message to deviceID with props as its application properties and returns once
// the hub accepted it (durable), or with the hub's refusal.
func (s *AMQPSender) Send(ctx context.Context, deviceID string, props []iothub.AppProperty) error {
	to := "/devices/" + deviceID + "/messages/devicebound"
	ap := make(map[string]any, len(props))
	for _, p := range props {
		ap[p.Name] = p.Value
	}
	err := s.snd.Send(ctx, &goamqp.Message{Properties: &goamqp.MessageProperties{To: &to}, ApplicationProperties: ap}, nil)
	var re *goamqp.Error
	if errors.As(err, &re) {
		return fmt.Errorf("amqp send to %s: refused: %s: %s", deviceID, re.Condition, re.Description)
	}
	if err != nil {
		return fmt.Errorf("amqp send to %s: %w", deviceID, err)
	}
	return nil
}

// Close closes the connection.
func (s *AMQPSender) Close() error { return s.conn.Close() }
