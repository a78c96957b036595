package iothub

import (
	"fmt"
	"strings"
)

// Get returns the first value of name and whether it was present (a null value is present, "").
func (b PropertyBag) Get(name string) (string, bool) {
	for _, p := range b {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// EncodePropertyBag percent-encodes keys and values (never '+'), `key` for null, `key=` for empty.
// Everything outside RFC 3986's unreserved set [A-Za-z0-9-._~] is escaped with upper-case hex, the
// same output as Python's quote(safe="") and JavaScript's encodeURIComponent plus !'()*: so `$.mid`
// goes out as `%24.mid`, exactly as Azure IoT Hub sends it. Properties with an empty name are skipped
// (they cannot be told apart from an empty pair on the wire).
func EncodePropertyBag(b PropertyBag) string {
	var sb strings.Builder
	for _, p := range b {
		if p.Name == "" {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('&')
		}
		sb.WriteString(PercentEncode(p.Name))
		if !p.Null {
			sb.WriteByte('=')
			sb.WriteString(PercentEncode(p.Value))
		}
	}
	return sb.String()
}

// DecodePropertyBag parses `k=v&k2&k3=` (any order); errors name the offending key or byte offset.
//
// It is tolerant of what real senders emit: pairs split at the first '=' (a raw '=' in a value is
// kept), empty pairs (`a=1&&b=2`, a trailing '&') are skipped, '+' is a literal plus (never a space),
// and bytes that should have been escaped but were not are taken literally. It rejects an empty key
// and malformed %-escapes.
func DecodePropertyBag(s string) (PropertyBag, error) {
	var bag PropertyBag
	off := 0
	for off <= len(s) {
		end := strings.IndexByte(s[off:], '&')
		if end < 0 {
			end = len(s)
		} else {
			end += off
		}
		pair := s[off:end]
		if pair != "" {
			rawKey, rawVal, hasVal := strings.Cut(pair, "=")
			if rawKey == "" {
				return nil, fmt.Errorf("property bag: empty key at offset %d", off)
			}
			key, err := PercentDecode(rawKey)
			if err != nil {
				return nil, fmt.Errorf("property bag: key %s at offset %d: %w", quote(rawKey), off, err)
			}
			p := Property{Name: key, Null: !hasVal}
			if hasVal {
				if p.Value, err = PercentDecode(rawVal); err != nil {
					return nil, fmt.Errorf("property bag: value of %s: %w", quote(key), err)
				}
			}
			bag = append(bag, p)
		}
		off = end + 1
	}
	return bag, nil
}

const upperHex = "0123456789ABCDEF"

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// PercentEncode escapes every byte outside [A-Za-z0-9-._~] as %XX (upper-case hex, never '+'):
// the encoding of property bags, SAS token fields and username parameters.
func PercentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return string(b)
}

// PercentDecode undoes %XX escapes (either hex case). '+' stays '+'. A '%' not followed by two hex
// digits is an error naming its offset.
func PercentDecode(s string) (string, error) {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			bad := s[i:min(i+3, len(s))]
			return "", fmt.Errorf("bad percent-escape %q at offset %d", bad, i)
		}
		b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	return string(b), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// quote renders a user-supplied value for an error message: Go-quoted, cut to 64 bytes.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q…(%d bytes)", s[:limit], len(s))
	}
	return fmt.Sprintf("%q", s)
}
