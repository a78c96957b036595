package amqp

import (
	"bytes"
	"context"
	"strings"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// SASL mechanisms offered. MSSBCBS (Python's uamqp, the C SDK) and ANONYMOUS authenticate nothing:
// the client puts a token on $cbs next. PLAIN carries `{policy}@sas.root.{hub}` and a SAS token.
var saslMechanisms = encoding.MultiSymbol{"MSSBCBS", "PLAIN", "ANONYMOUS"}

// sasl runs the SASL exchange (§5.3) after the SASL header was exchanged.
func (c *conn) sasl() error {
	c.send(0, &frames.SASLMechanisms{Mechanisms: saslMechanisms})
	fb, _, err := c.readBody(preOpenMaxFrame)
	if err != nil {
		return err
	}
	init, ok := fb.(*frames.SASLInit)
	if !ok {
		c.send(0, &frames.SASLOutcome{Code: encoding.CodeSASLAuth})
		return closeWith(condNotAllowed, "want sasl-init, got %T", fb)
	}
	switch strings.ToUpper(string(init.Mechanism)) {
	case "MSSBCBS", "ANONYMOUS":
	case "PLAIN":
		// RFC 4616: authzid NUL authcid NUL passwd.
		parts := bytes.SplitN(init.InitialResponse, []byte{0}, 3)
		if len(parts) != 3 {
			c.send(0, &frames.SASLOutcome{Code: encoding.CodeSASLAuth})
			return closeWith(condUnauthorized, "SASL PLAIN response is not authzid NUL authcid NUL password")
		}
		user, pass := string(parts[1]), string(parts[2])
		policy, _, _ := strings.Cut(user, "@")
		g, err := c.srv.verifyToken(context.Background(), c.srv.opt.HostName, pass)
		if err == nil && g.policy != nil && !strings.EqualFold(g.policy.Name, policy) {
			err = errPlainUser(user, g.policy.Name)
		}
		if err != nil {
			c.log.Info("amqp: SASL PLAIN refused", "user", user, "err", err)
			c.srv.tokenEvent(TokenRefused)
			c.send(0, &frames.SASLOutcome{Code: encoding.CodeSASLAuth})
			return closeWith(condUnauthorized, "SASL PLAIN: %v", err)
		}
		c.mu.Lock()
		c.install(g)
		c.mu.Unlock()
	default:
		c.send(0, &frames.SASLOutcome{Code: encoding.CodeSASLAuth})
		return closeWith(condNotImplemented, "SASL mechanism %q: c2d-hub offers MSSBCBS, PLAIN and ANONYMOUS", init.Mechanism)
	}
	c.send(0, &frames.SASLOutcome{Code: encoding.CodeSASLOK})
	return nil
}

type plainUserError struct{ user, policy string }

func (e *plainUserError) Error() string {
	return "user " + e.user + " does not name the token's policy " + e.policy + " (want " + e.policy + "@sas.root.{hub})"
}

func errPlainUser(user, policy string) error { return &plainUserError{user, policy} }
