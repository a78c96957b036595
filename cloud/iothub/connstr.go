package iothub

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrConnectionString is wrapped by every connection-string parse failure.
var ErrConnectionString = errors.New("invalid connection string")

// Connection-string keys, case-sensitive as in the Node and Python SDKs (C# ignores case; a key that
// differs only in case gets a "did you mean" error instead of silently working).
const (
	csHostName              = "HostName"
	csDeviceID              = "DeviceId"
	csModuleID              = "ModuleId"
	csSharedAccessKey       = "SharedAccessKey"
	csSharedAccessKeyName   = "SharedAccessKeyName"
	csSharedAccessSignature = "SharedAccessSignature"
	csGatewayHostName       = "GatewayHostName"
	csX509                  = "x509"
)

// DeviceConnectionString is `HostName=...;DeviceId=...;SharedAccessKey=...` and its variants.
type DeviceConnectionString struct {
	HostName              string
	DeviceID              string
	ModuleID              string
	SharedAccessKey       string
	SharedAccessSignature string
	GatewayHostName       string
	X509                  bool
}

// splitConnectionString splits on ';' and each pair at its first '='. Empty segments (a trailing
// ';') are skipped. It rejects pairs without '=', empty values, duplicates and keys not in allowed.
func splitConnectionString(s string, allowed []string) (map[string]string, error) {
	kv := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: empty", ErrConnectionString)
	}
	for _, seg := range strings.Split(s, ";") {
		if strings.TrimSpace(seg) == "" {
			continue
		}
		k, v, ok := strings.Cut(seg, "=")
		if !ok {
			return nil, fmt.Errorf("%w: segment %s has no '=' (want Key=Value)", ErrConnectionString, quote(redact(seg)))
		}
		known := false
		for _, a := range allowed {
			if k == a {
				known = true
				break
			}
		}
		if !known {
			for _, a := range allowed {
				if strings.EqualFold(strings.TrimSpace(k), a) {
					return nil, fmt.Errorf("%w: unknown key %s (keys are case-sensitive: did you mean %q?)", ErrConnectionString, quote(k), a)
				}
			}
			return nil, fmt.Errorf("%w: unknown key %s (allowed: %s)", ErrConnectionString, quote(redact(k)), strings.Join(allowed, ", "))
		}
		if _, dup := kv[k]; dup {
			return nil, fmt.Errorf("%w: duplicate key %q", ErrConnectionString, k)
		}
		if v == "" {
			return nil, fmt.Errorf("%w: %s is empty", ErrConnectionString, k)
		}
		kv[k] = v
	}
	return kv, nil
}

// redact hides everything after the first 8 bytes: a malformed segment may hold a key.
func redact(s string) string {
	if len(s) <= 8 {
		return s
	}
	return s[:8] + "…"
}

func checkKey(name, v string) error {
	if _, err := decodeKey(v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConnectionString, name, err)
	}
	return nil
}

// ParseDeviceConnectionString splits on ';' and at the first '='; rejects duplicates, unknown keys,
// missing keys and bad base64, naming the key.
//
// Required: HostName, DeviceId and exactly one credential: SharedAccessKey (valid base64),
// SharedAccessSignature (a well-formed token) or x509=true. ModuleId and GatewayHostName are optional.
func ParseDeviceConnectionString(s string) (DeviceConnectionString, error) {
	kv, err := splitConnectionString(s, []string{csHostName, csDeviceID, csModuleID, csSharedAccessKey,
		csSharedAccessSignature, csGatewayHostName, csX509})
	if err != nil {
		return DeviceConnectionString{}, err
	}
	c := DeviceConnectionString{
		HostName:              kv[csHostName],
		DeviceID:              kv[csDeviceID],
		ModuleID:              kv[csModuleID],
		SharedAccessKey:       kv[csSharedAccessKey],
		SharedAccessSignature: kv[csSharedAccessSignature],
		GatewayHostName:       kv[csGatewayHostName],
	}
	if v, ok := kv[csX509]; ok {
		switch strings.ToLower(v) {
		case "true":
			c.X509 = true
		case "false":
		default:
			return DeviceConnectionString{}, fmt.Errorf("%w: x509 %s: want true", ErrConnectionString, quote(v))
		}
	}
	if err := c.validate(); err != nil {
		return DeviceConnectionString{}, err
	}
	return c, nil
}

func (c DeviceConnectionString) validate() error {
	if c.HostName == "" {
		return fmt.Errorf("%w: missing HostName", ErrConnectionString)
	}
	if err := validateHostName(c.HostName); err != nil {
		return fmt.Errorf("%w: HostName: %w", ErrConnectionString, err)
	}
	if c.DeviceID == "" {
		return fmt.Errorf("%w: missing DeviceId", ErrConnectionString)
	}
	if err := ValidateDeviceID(c.DeviceID); err != nil {
		return fmt.Errorf("%w: DeviceId: %w", ErrConnectionString, err)
	}
	if c.ModuleID != "" {
		if err := ValidateModuleID(c.ModuleID); err != nil {
			return fmt.Errorf("%w: ModuleId: %w", ErrConnectionString, err)
		}
	}
	if c.GatewayHostName != "" {
		if err := validateHostName(c.GatewayHostName); err != nil {
			return fmt.Errorf("%w: GatewayHostName: %w", ErrConnectionString, err)
		}
	}
	n := 0
	for _, set := range []bool{c.SharedAccessKey != "", c.SharedAccessSignature != "", c.X509} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Errorf("%w: missing credential: one of SharedAccessKey, SharedAccessSignature or x509=true", ErrConnectionString)
	case n > 1:
		return fmt.Errorf("%w: conflicting credentials: give only one of SharedAccessKey, SharedAccessSignature or x509=true", ErrConnectionString)
	}
	if c.SharedAccessKey != "" {
		if err := checkKey(csSharedAccessKey, c.SharedAccessKey); err != nil {
			return err
		}
	}
	if c.SharedAccessSignature != "" {
		if _, err := ParseSASToken(c.SharedAccessSignature); err != nil {
			return fmt.Errorf("%w: SharedAccessSignature: %w", ErrConnectionString, err)
		}
	}
	return nil
}

// String formats it the way the official SDKs do:
// HostName;DeviceId;[ModuleId;](SharedAccessKey|SharedAccessSignature|x509=true)[;GatewayHostName].
func (c DeviceConnectionString) String() string {
	var sb strings.Builder
	sb.WriteString(csHostName + "=" + c.HostName)
	sb.WriteString(";" + csDeviceID + "=" + c.DeviceID)
	if c.ModuleID != "" {
		sb.WriteString(";" + csModuleID + "=" + c.ModuleID)
	}
	switch {
	case c.SharedAccessKey != "":
		sb.WriteString(";" + csSharedAccessKey + "=" + c.SharedAccessKey)
	case c.SharedAccessSignature != "":
		sb.WriteString(";" + csSharedAccessSignature + "=" + c.SharedAccessSignature)
	case c.X509:
		sb.WriteString(";" + csX509 + "=true")
	}
	if c.GatewayHostName != "" {
		sb.WriteString(";" + csGatewayHostName + "=" + c.GatewayHostName)
	}
	return sb.String()
}

// ConnectHost is where to open the connection: GatewayHostName when set, else HostName. Tokens and
// usernames always name HostName.
func (c DeviceConnectionString) ConnectHost() string {
	if c.GatewayHostName != "" {
		return c.GatewayHostName
	}
	return c.HostName
}

// Token returns the SAS token to CONNECT with: SharedAccessSignature as given, or one signed with the
// key for `{HostName}/devices/{id}` expiring at now+ttl. An x509 connection string has no token:
// Token returns "" (the MQTT password stays empty).
func (c DeviceConnectionString) Token(now time.Time, ttl time.Duration) (string, error) {
	switch {
	case c.SharedAccessSignature != "":
		return c.SharedAccessSignature, nil
	case c.SharedAccessKey != "":
		if ttl <= 0 {
			return "", fmt.Errorf("device token: ttl %s must be positive", ttl)
		}
		// Ids are percent-encoded inside the URI (then the URI again as sr), as the C# SDK does and
		// Azure expects for ids with special characters; plain ids are unchanged by it.
		res := DeviceResource(c.HostName, PercentEncode(c.DeviceID), "")
		if c.ModuleID != "" {
			res = DeviceResource(c.HostName, PercentEncode(c.DeviceID), PercentEncode(c.ModuleID))
		}
		return NewSASToken(res, c.SharedAccessKey, "", now.Add(ttl))
	case c.X509:
		return "", nil
	}
	return "", errors.New("device token: connection string has no credential")
}

// ServiceConnectionString is `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`.
type ServiceConnectionString struct {
	HostName            string
	SharedAccessKeyName string
	SharedAccessKey     string
}

// ParseServiceConnectionString is ParseDeviceConnectionString's sibling for policies: all three keys
// are required.
func ParseServiceConnectionString(s string) (ServiceConnectionString, error) {
	kv, err := splitConnectionString(s, []string{csHostName, csSharedAccessKeyName, csSharedAccessKey})
	if err != nil {
		return ServiceConnectionString{}, err
	}
	c := ServiceConnectionString{
		HostName:            kv[csHostName],
		SharedAccessKeyName: kv[csSharedAccessKeyName],
		SharedAccessKey:     kv[csSharedAccessKey],
	}
	for _, req := range []struct{ k, v string }{
		{csHostName, c.HostName}, {csSharedAccessKeyName, c.SharedAccessKeyName}, {csSharedAccessKey, c.SharedAccessKey},
	} {
		if req.v == "" {
			return ServiceConnectionString{}, fmt.Errorf("%w: missing %s", ErrConnectionString, req.k)
		}
	}
	if err := validateHostName(c.HostName); err != nil {
		return ServiceConnectionString{}, fmt.Errorf("%w: HostName: %w", ErrConnectionString, err)
	}
	if err := checkKey(csSharedAccessKey, c.SharedAccessKey); err != nil {
		return ServiceConnectionString{}, err
	}
	return c, nil
}

// String formats it the way the official SDKs do.
func (c ServiceConnectionString) String() string {
	return csHostName + "=" + c.HostName + ";" + csSharedAccessKeyName + "=" + c.SharedAccessKeyName +
		";" + csSharedAccessKey + "=" + c.SharedAccessKey
}

// Token signs `{HostName}` with skn=SharedAccessKeyName, expiring at now+ttl.
func (c ServiceConnectionString) Token(now time.Time, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("service token: ttl %s must be positive", ttl)
	}
	return NewSASToken(c.HostName, c.SharedAccessKey, c.SharedAccessKeyName, now.Add(ttl))
}
