package amqp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/c2d-project/c2d/cloud/amqp/internal/buffer"
	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// Protocol headers (AMQP 1.0 §2.2, SASL §5.3.1).
var (
	headerAMQP = []byte{'A', 'M', 'Q', 'P', 0, 1, 0, 0}
	headerSASL = []byte{'A', 'M', 'Q', 'P', 3, 1, 0, 0}
)

// errFraming marks frames that cannot be read; the connection closes with amqp:connection:framing-error.
var errFraming = errors.New("framing error")

// readFrame reads one frame of at most maxSize bytes. An empty body (a heartbeat) returns nil body.
func readFrame(r *bufio.Reader, maxSize uint32) (frames.Header, []byte, error) {
	var hb [frames.HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return frames.Header{}, nil, err
	}
	h := frames.Header{
		Size:       binary.BigEndian.Uint32(hb[0:4]),
		DataOffset: hb[4],
		FrameType:  hb[5],
		Channel:    binary.BigEndian.Uint16(hb[6:8]),
	}
	switch {
	case h.Size < frames.HeaderSize:
		return h, nil, fmt.Errorf("%w: frame size %d is below the 8-byte header", errFraming, h.Size)
	case h.Size > maxSize:
		return h, nil, fmt.Errorf("%w: frame of %d bytes exceeds max-frame-size %d", errFraming, h.Size, maxSize)
	case h.DataOffset < 2 || uint32(h.DataOffset)*4 > h.Size:
		return h, nil, fmt.Errorf("%w: data offset %d in a frame of %d bytes", errFraming, h.DataOffset, h.Size)
	}
	rest := make([]byte, h.Size-frames.HeaderSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		return h, nil, err
	}
	body := rest[int(h.DataOffset)*4-frames.HeaderSize:]
	if len(body) == 0 {
		return h, nil, nil
	}
	return h, body, nil
}

// decodeBody decodes a performative (a transfer's codec keeps the payload that follows it).
func decodeBody(body []byte) (frames.FrameBody, error) {
	return frames.ParseBody(buffer.New(body))
}

// encodeFrame encodes one frame (a transfer's codec appends its Payload).
func encodeFrame(typ frames.Type, channel uint16, body frames.FrameBody) ([]byte, error) {
	buf := &buffer.Buffer{}
	if err := frames.Write(buf, frames.Frame{Type: typ, Channel: channel, Body: body}); err != nil {
		return nil, err
	}
	return buf.Detach(), nil
}

// heartbeat is an empty AMQP frame (§2.4.5): it only resets the peer's idle timer.
var heartbeat = []byte{0, 0, 0, 8, 2, 0, 0, 0}

// decodeMessage decodes a bare message (the payload of a complete delivery).
func decodeMessage(payload []byte) (*frames.Message, error) {
	m := new(frames.Message)
	if err := m.Unmarshal(buffer.New(payload)); err != nil {
		return nil, err
	}
	return m, nil
}

// encodeMessage encodes m as a transfer payload.
func encodeMessage(m *frames.Message) ([]byte, error) {
	buf := &buffer.Buffer{}
	if err := m.Marshal(buf); err != nil {
		return nil, err
	}
	return buf.Detach(), nil
}

// AMQP error conditions used here (AMQP 1.0 §2.8.15-18; amqp:link:message-size-exceeded etc.).
const (
	condInternal         encoding.ErrCond = "amqp:internal-error"
	condNotFound         encoding.ErrCond = "amqp:not-found"
	condUnauthorized     encoding.ErrCond = "amqp:unauthorized-access"
	condDecode           encoding.ErrCond = "amqp:decode-error"
	condResourceLimit    encoding.ErrCond = "amqp:resource-limit-exceeded"
	condNotAllowed       encoding.ErrCond = "amqp:not-allowed"
	condInvalidField     encoding.ErrCond = "amqp:invalid-field"
	condNotImplemented   encoding.ErrCond = "amqp:not-implemented"
	condPrecondition     encoding.ErrCond = "amqp:precondition-failed"
	condFraming          encoding.ErrCond = "amqp:connection:framing-error"
	condForced           encoding.ErrCond = "amqp:connection:forced"
	condWindowViolation  encoding.ErrCond = "amqp:session:window-violation"
	condUnattachedHandle encoding.ErrCond = "amqp:session:unattached-handle"
	condHandleInUse      encoding.ErrCond = "amqp:session:handle-in-use"
	condMessageSize      encoding.ErrCond = "amqp:link:message-size-exceeded"
	condDetachForced     encoding.ErrCond = "amqp:link:detach-forced"
	condErrantLink       encoding.ErrCond = "amqp:session:errant-link"
	condTransferLimit    encoding.ErrCond = "amqp:link:transfer-limit-exceeded"
	// Azure's own conditions, which its SDKs translate (ArgumentError, MessageLockLostError).
	condArgument encoding.ErrCond = "com.microsoft:argument-error"
	condLockLost encoding.ErrCond = "com.microsoft:message-lock-lost"
)

// amqpError builds an *encoding.Error.
func amqpError(cond encoding.ErrCond, format string, args ...any) *encoding.Error {
	return &encoding.Error{Condition: cond, Description: fmt.Sprintf(format, args...)}
}

// protoError is a fault of the peer that ends the connection with an AMQP error.
type protoError struct{ e *encoding.Error }

func (p *protoError) Error() string { return string(p.e.Condition) + ": " + p.e.Description }

func closeWith(cond encoding.ErrCond, format string, args ...any) error {
	return &protoError{amqpError(cond, format, args...)}
}
