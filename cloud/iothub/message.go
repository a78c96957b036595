package iothub

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every validation failure of a message, id or property (the service API
// maps it to 400004 ArgumentInvalid).
var ErrInvalid = errors.New("invalid")

// ErrMessageTooLarge is wrapped when a message exceeds MaxMessageSize (413001 MessageTooLarge).
var ErrMessageTooLarge = errors.New("message too large")

// ParseAckMode accepts none|positive|negative|full ("" means none). Case-insensitive: the C SDK's
// tests show `iothub-ack=Full`.
func ParseAckMode(s string) (AckMode, error) {
	switch strings.ToLower(s) {
	case "", "none":
		return AckNone, nil
	case "positive":
		return AckPositive, nil
	case "negative":
		return AckNegative, nil
	case "full":
		return AckFull, nil
	}
	return AckNone, fmt.Errorf("%w: iothub-ack %s: want none, positive, negative or full", ErrInvalid, quote(s))
}

// Wants reports whether a message with this ack mode produces feedback for status.
// positive: Success only; negative: Expired, DeliveryCountExceeded, Rejected; full: all of those.
// Purged produces a record for negative and full (c2d: a purge is a dead-letter the sender should
// hear about; Azure documents no feedback for purges).
func (a AckMode) Wants(status FeedbackStatus) bool {
	mode, err := ParseAckMode(string(a))
	if err != nil {
		return false
	}
	switch status {
	case StatusSuccess:
		return mode == AckPositive || mode == AckFull
	case StatusExpired, StatusDeliveryCountExceeded, StatusRejected, StatusPurged:
		return mode == AckNegative || mode == AckFull
	}
	return false
}

// Validate checks ids, property names/values (Azure's character set), ack mode and the 64 KB rule.
//
// MessageID, CorrelationID and UserID may be empty; when set they follow ValidateMessageID.
// Application property names must be non-empty, unique, in Azure's token character set, and must
// not start with '$' (reserved for `$.` system and `$c2d.` extension keys) or `iothub-` (Azure's
// prefix, e.g. iothub-ack); values use the same set and may be empty. ContentType, ContentEncoding
// and To must be printable ASCII. Errors wrap ErrInvalid (or ErrMessageTooLarge) and name the field.
func (m *Message) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"messageId", m.MessageID}, {"correlationId", m.CorrelationID}, {"userId", m.UserID},
	} {
		if f.v == "" {
			continue
		}
		if err := validateID(f.name, f.v, messageIDChar); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, v string }{
		{"contentType", m.ContentType}, {"contentEncoding", m.ContentEncoding}, {"to", m.To},
	} {
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c < 0x20 || c > 0x7e {
				return fmt.Errorf("%w: %s %s: byte %q at offset %d is not printable ASCII", ErrInvalid, f.name, quote(f.v), c, i)
			}
		}
	}
	if _, err := ParseAckMode(string(m.Ack)); err != nil {
		return err
	}
	if m.LockToken != "" {
		if err := ValidateLockToken(m.LockToken); err != nil {
			return err
		}
	}
	seen := make(map[string]bool, len(m.Properties))
	for i, p := range m.Properties {
		if err := ValidatePropertyName(p.Name); err != nil {
			return fmt.Errorf("properties[%d]: %w", i, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: properties[%d]: duplicate property name %s", ErrInvalid, i, quote(p.Name))
		}
		seen[p.Name] = true
		if err := validatePropertyValue(p.Name, p.Value); err != nil {
			return fmt.Errorf("properties[%d]: %w", i, err)
		}
	}
	if n := m.Size(); n > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes (body %d) exceeds %d bytes (body + system property values + application property names and values)",
			ErrMessageTooLarge, n, len(m.Body), MaxMessageSize)
	}
	return nil
}

// Size is what counts against MaxMessageSize: body + system property values + app property names
// and values. The system properties counted are the string ones (message, correlation and user id,
// to, content type and encoding, ack); the expiry time and the extension's lock token are not.
func (m *Message) Size() int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + len(m.To) +
		len(m.ContentType) + len(m.ContentEncoding) + len(m.Ack)
	for _, p := range m.Properties {
		n += len(p.Name) + len(p.Value)
	}
	return n
}

// Property returns the first application property called name.
func (m *Message) Property(name string) (string, bool) {
	for _, p := range m.Properties {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// ValidateDeviceID checks Azure's device id rules (≤128 ASCII from the allowed set): case-sensitive,
// letters, digits and - . + % _ # * ? ! ( ) , = @ $ '.
func ValidateDeviceID(id string) error { return validateID("device id", id, deviceIDChar) }

// ValidateModuleID checks a module id; Azure applies the device id rules.
func ValidateModuleID(id string) error { return validateID("module id", id, deviceIDChar) }

// ValidateMessageID checks a message/correlation id (≤128 chars, Azure's character set): ASCII
// letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '.
func ValidateMessageID(id string) error { return validateID("message id", id, messageIDChar) }

// ValidatePropertyName checks an application property name: non-empty, Azure's character set
// (letters, digits and ! # $ % & ' * + - . ^ _ ` | ~), not starting with '$' or `iothub-`.
func ValidatePropertyName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: property name is empty", ErrInvalid)
	}
	if strings.HasPrefix(name, "$") {
		return fmt.Errorf("%w: property name %s: names starting with '$' are reserved for system properties", ErrInvalid, quote(name))
	}
	if len(name) >= 7 && strings.EqualFold(name[:7], "iothub-") {
		return fmt.Errorf("%w: property name %s: the iothub- prefix is reserved", ErrInvalid, quote(name))
	}
	for i := 0; i < len(name); i++ {
		if !propertyChar(name[i]) {
			return fmt.Errorf("%w: property name %s: character %q at offset %d is not allowed (ASCII letters, digits and !#$%%&'*+-.^_`|~)", ErrInvalid, quote(name), name[i], i)
		}
	}
	return nil
}

func validatePropertyValue(name, v string) error {
	for i := 0; i < len(v); i++ {
		if !propertyChar(v[i]) {
			return fmt.Errorf("%w: property %s value %s: character %q at offset %d is not allowed (ASCII letters, digits and !#$%%&'*+-.^_`|~)", ErrInvalid, quote(name), quote(v), v[i], i)
		}
	}
	return nil
}

func validateID(what, id string, ok func(byte) bool) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: %s %s is %d characters, more than %d", ErrInvalid, what, quote(id), len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !ok(id[i]) {
			return fmt.Errorf("%w: %s %s: character %q at offset %d is not allowed", ErrInvalid, what, quote(id), id[i], i)
		}
	}
	return nil
}

func alnum(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
}

func deviceIDChar(c byte) bool { return alnum(c) || strings.IndexByte("-.+%_#*?!(),=@$'", c) >= 0 }

func messageIDChar(c byte) bool { return alnum(c) || strings.IndexByte("-:.+%_#*?!(),=@;$'", c) >= 0 }

func propertyChar(c byte) bool { return alnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 }
