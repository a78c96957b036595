package hub

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// codedError is a service-facing failure: errors.As finds the *iothub.Error (Azure's code and the
// detail the API returns) and errors.Is matches the hub's sentinel.
type codedError struct {
	ie   *iothub.Error
	kind error
}

func (e *codedError) Error() string   { return e.ie.Error() }
func (e *codedError) Unwrap() []error { return []error{e.ie, e.kind} }

func coded(kind error, code iothub.ErrorCode, format string, args ...any) error {
	return &codedError{ie: &iothub.Error{Code: code, Detail: fmt.Sprintf(format, args...)}, kind: kind}
}

func errDeviceNotFound(id string) error {
	return coded(ErrDeviceNotFound, iothub.CodeDeviceNotFound, "device %q is not registered", id)
}

func errLockLost(id, token string) error {
	return coded(ErrLockLost, iothub.CodeDeviceMessageLockLost,
		"device %q: lock token %q is unknown or its lock expired (the message is redelivered or settled)", id, token)
}

func errInvalid(format string, args ...any) error {
	return coded(ErrInvalidArgument, iothub.CodeArgumentInvalid, format, args...)
}

// randomToken returns n random bytes as unpadded base64url: topic-safe (no '/', '+', '#').
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newLockToken is 22 characters: 128 random bits.
func newLockToken() string { return randomToken(16) }

// A message's lock token is a prefix drawn for each delivery round (lockPrefixLen characters: 96
// random bits) followed by the message's sequence number, so one statement can lock a round's
// messages (lockNext), every token is still unique and unguessable, and a settle finds the message
// by its primary key (lockSeq) instead of through an index of its own on every message.
func newLockPrefix() string { return randomToken(lockPrefixBytes) }

const lockPrefixBytes = 12

var lockPrefixLen = base64.RawURLEncoding.EncodedLen(lockPrefixBytes)

// lockSeq is the sequence number a lock token ends in; false for a token no delivery made (such a
// token matches no message, so the caller refuses it as a lost lock).
func lockSeq(token string) (int64, bool) {
	if len(token) <= lockPrefixLen {
		return 0, false
	}
	seq, err := strconv.ParseInt(token[lockPrefixLen:], 10, 64)
	return seq, err == nil && seq > 0
}

// longestLockToken is as long as a message's lock token can be (a prefix and a 19-digit sequence
// number), in characters that percent-encoding leaves alone, as the token's are.
var longestLockToken = newLockPrefix() + "9223372036854775807"

// newKey is a 32-byte key in standard base64, as Azure generates them.
func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// newUUID is a random (version 4) UUID, used as the message id of sends that set none.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
