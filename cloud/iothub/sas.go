package iothub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Typed token failures, for errors.Is; ParseSASToken/Verify wrap them with detail (and a clock-skew
// hint for expiry).
var (
	ErrTokenMalformed = errors.New("malformed SAS token")
	ErrTokenExpired   = errors.New("SAS token expired")
	ErrTokenResource  = errors.New("SAS token resource does not cover the target")
	ErrTokenSignature = errors.New("SAS token signature does not match")
)

// SASPrefix starts every token.
const SASPrefix = "SharedAccessSignature"

// ClockSkewWindow is how far apart device and hub clocks can be before Azure rejects tokens; an
// expiry error within this window (or absurdly far in the past) carries a clock hint.
const ClockSkewWindow = 5 * time.Minute

// SASToken is a parsed `SharedAccessSignature sr=...&sig=...&se=...[&skn=...]` (fields in any order).
type SASToken struct {
	Resource  string    // sr, URL-decoded
	RawSR     string    // sr exactly as transmitted (what was signed)
	Signature string    // sig, URL-decoded (base64)
	Expiry    time.Time // se
	KeyName   string    // skn, empty for device-key tokens

	rawSE string // se exactly as transmitted (also signed)
}

// NewSASToken signs resourceURI with a base64 key, Azure's way; keyName may be empty.
//
// sr = percent-encoded resourceURI (as encodeURIComponent / quote(safe="")), string to sign =
// sr + "\n" + se, sig = percent-encoded base64(HMAC-SHA256(base64-decoded key, string to sign)).
// Fields go out as sr, sig, se, skn (the C# and Python order); se is expiry in Unix seconds.
func NewSASToken(resourceURI, base64Key, keyName string, expiry time.Time) (string, error) {
	if resourceURI == "" {
		return "", errors.New("sas: resource URI is empty")
	}
	key, err := decodeKey(base64Key)
	if err != nil {
		return "", fmt.Errorf("sas: %w", err)
	}
	if expiry.Unix() <= 0 {
		return "", fmt.Errorf("sas: expiry %s is not after 1970", expiry.UTC().Format(time.RFC3339))
	}
	sr := PercentEncode(resourceURI)
	se := strconv.FormatInt(expiry.Unix(), 10)
	tok := SASPrefix + " sr=" + sr + "&sig=" + PercentEncode(sign(key, sr, se)) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + PercentEncode(keyName)
	}
	return tok, nil
}

func sign(key []byte, sr, se string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(sr + "\n" + se))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func decodeKey(base64Key string) ([]byte, error) {
	if base64Key == "" {
		return nil, errors.New("key is empty")
	}
	key, err := base64.StdEncoding.DecodeString(base64Key)
	if err != nil {
		return nil, fmt.Errorf("key is not valid base64: %w", err)
	}
	return key, nil
}

// ParseSASToken parses a token without checking it.
//
// Accepted: the `SharedAccessSignature` prefix, whitespace, then '&'-separated fields in any order,
// each split at its first '='. sr, sig and se are required; skn is optional. Duplicate, empty and
// unknown fields are rejected, as are a signature that is not base64 of a SHA-256 MAC and an se that
// is not a positive decimal integer. Every error wraps ErrTokenMalformed and names the field.
func ParseSASToken(s string) (*SASToken, error) {
	bad := func(format string, args ...any) (*SASToken, error) {
		return nil, fmt.Errorf("%w: %s", ErrTokenMalformed, fmt.Sprintf(format, args...))
	}
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, SASPrefix)
	if !ok {
		return bad("does not start with %q", SASPrefix)
	}
	fields := strings.TrimLeft(rest, " \t")
	if len(fields) == len(rest) {
		return bad("no space after %q", SASPrefix)
	}
	if strings.ContainsAny(fields, " \t\r\n") {
		return bad("unexpected whitespace inside the fields")
	}
	t := &SASToken{}
	seen := map[string]bool{}
	for _, f := range strings.Split(fields, "&") {
		name, val, hasEq := strings.Cut(f, "=")
		if !hasEq {
			return bad("field %s has no '='", quote(f))
		}
		if seen[name] {
			return bad("duplicate field %q", name)
		}
		seen[name] = true
		if val == "" {
			return bad("field %q is empty", name)
		}
		switch name {
		case "sr":
			t.RawSR = val
			r, err := PercentDecode(val)
			if err != nil {
				return bad("sr: %v", err)
			}
			t.Resource = r
		case "sig":
			sig, err := PercentDecode(val)
			if err != nil {
				return bad("sig: %v", err)
			}
			mac, err := base64.StdEncoding.DecodeString(sig)
			if err != nil || len(mac) != sha256.Size {
				return bad("sig %s is not the base64 of a 32-byte HMAC-SHA256", quote(sig))
			}
			t.Signature = sig
		case "se":
			n, err := strconv.ParseInt(val, 10, 64)
			if errors.Is(err, strconv.ErrRange) && val[0] != '-' {
				return bad("se %s is too large (Unix seconds)", quote(val))
			}
			if err != nil || n <= 0 || val[0] == '+' {
				return bad("se %s is not a positive number of Unix seconds", quote(val))
			}
			t.rawSE = val
			t.Expiry = time.Unix(n, 0).UTC()
		case "skn":
			k, err := PercentDecode(val)
			if err != nil {
				return bad("skn: %v", err)
			}
			t.KeyName = k
		default:
			return bad("unknown field %s", quote(name))
		}
	}
	for _, req := range []string{"sr", "sig", "se"} {
		if !seen[req] {
			return bad("missing field %q", req)
		}
	}
	return t, nil
}

// Verify checks the signature against base64Key (constant time), the expiry against now, and that
// the token's resource covers target by whole path segments (case-insensitive host).
//
// Order: resource, then signature, then expiry, so a wrong-device token says "resource" and only an
// authentic token earns an expiry message with clock hints. The MAC is computed over sr and se
// exactly as transmitted, so tokens from SDKs that encode differently (lower-case hex, C#'s
// WebUtility) verify too.
func (t *SASToken) Verify(base64Key, target string, now time.Time) error {
	if !ResourceCovers(t.Resource, target) {
		return fmt.Errorf("%w: token is for %s, connection is for %s", ErrTokenResource, quote(t.Resource), quote(target))
	}
	key, err := decodeKey(base64Key)
	if err != nil {
		return fmt.Errorf("verify SAS token: %w", err)
	}
	se := t.rawSE
	if se == "" {
		se = strconv.FormatInt(t.Expiry.Unix(), 10)
	}
	got, err := base64.StdEncoding.DecodeString(t.Signature)
	if err != nil {
		return fmt.Errorf("%w: sig is not base64", ErrTokenSignature)
	}
	h := hmac.New(sha256.New, key)
	h.Write([]byte(t.RawSR + "\n" + se))
	if !hmac.Equal(got, h.Sum(nil)) {
		which := "the device key"
		if t.KeyName != "" {
			which = fmt.Sprintf("the key of policy %q", t.KeyName)
		}
		return fmt.Errorf("%w: not signed with %s (wrong or rotated key?)", ErrTokenSignature, which)
	}
	if !now.Before(t.Expiry) {
		ago := now.Sub(t.Expiry).Truncate(time.Second)
		msg := fmt.Sprintf("expired %s ago (se=%s, %s; now %s)", ago, se,
			t.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		switch {
		case ago <= ClockSkewWindow:
			msg += "; this is within clock-skew range: check that the device's clock is synchronised (NTP) and renew tokens before they expire"
		case ago > 365*24*time.Hour:
			msg += "; that is implausibly long ago: the device's clock is probably wrong (no RTC or NTP yet?)"
		}
		return fmt.Errorf("%w: %s", ErrTokenExpired, msg)
	}
	return nil
}

// ResourceCovers reports whether a token for resource grants access to target: equal, or target
// continues resource at a '/' boundary (`h/devices/a` covers `h/devices/a/modules/m`, not
// `h/devices/ab`).
//
// Segments compare case-insensitively, as Azure IoT Hub and IoT Edge do (tokens "come in lower case
// by convention"; Microsoft's own C# sample once lower-cased the URI). The signature still has to
// come from the target device's key, so this only widens what a policy token names. target is
// built from raw ids (DeviceResource); a resource segment matches either raw or percent-decoded
// once, because the C# SDK percent-encodes device and module ids inside the URI before encoding it
// as sr. An `https://`-style scheme and a trailing '/' are ignored on both sides.
func ResourceCovers(resource, target string) bool {
	r := splitResource(resource)
	g := splitResource(target)
	if len(r) == 0 || len(r) > len(g) {
		return false
	}
	for i := range r {
		if strings.EqualFold(r[i], g[i]) {
			continue
		}
		if dec, err := PercentDecode(r[i]); i > 0 && err == nil && strings.EqualFold(dec, g[i]) {
			continue
		}
		return false
	}
	return true
}

func splitResource(s string) []string {
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return nil
	}
	return strings.Split(s, "/")
}

// DeviceResource is `{host}/devices/{deviceId}` (module: `/modules/{moduleId}` appended).
func DeviceResource(host, deviceID, moduleID string) string {
	r := host + "/devices/" + deviceID
	if moduleID != "" {
		r += "/modules/" + moduleID
	}
	return r
}

// String renders the token again (sr and se as transmitted when parsed).
func (t *SASToken) String() string {
	se := t.rawSE
	if se == "" {
		se = strconv.FormatInt(t.Expiry.Unix(), 10)
	}
	sr := t.RawSR
	if sr == "" {
		sr = PercentEncode(t.Resource)
	}
	s := SASPrefix + " sr=" + sr + "&sig=" + PercentEncode(t.Signature) + "&se=" + se
	if t.KeyName != "" {
		s += "&skn=" + PercentEncode(t.KeyName)
	}
	return s
}
