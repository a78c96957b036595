package iothub

// STUBS: the iothub helper replaces every body here with the real implementation (moving each into
// its own file: connstr.go, sas.go, topic.go, propertybag.go, message.go, feedback.go, errors.go,
// extension.go). Signatures are the contract: keep them.

import (
	"errors"
	"net/url"
	"time"
)

var errTODO = errors.New("iothub: not implemented yet")

// ---- property bags (propertybag.go) ----

// Get returns the first value of name and whether it was present (a null value is present, "").
func (b PropertyBag) Get(name string) (string, bool) { return "", false }

// EncodePropertyBag percent-encodes keys and values (never '+'), `key` for null, `key=` for empty.
func EncodePropertyBag(b PropertyBag) string { return "" }

// DecodePropertyBag parses `k=v&k2&k3=` (any order); errors name the offending key or byte offset.
func DecodePropertyBag(s string) (PropertyBag, error) { return nil, errTODO }

// ---- topics, usernames, client ids (topic.go) ----

// DeviceBoundFilter is the subscription filter `devices/{id}/messages/devicebound/#`.
func DeviceBoundFilter(deviceID string) string { return "" }

// DeviceBoundTopic renders a message's system and application properties into its delivery topic.
func DeviceBoundTopic(deviceID string, m *Message) string { return "" }

// ParseDeviceBoundTopic decodes a delivery topic into the device id and a Message without Body.
func ParseDeviceBoundTopic(topic string) (deviceID string, m *Message, err error) {
	return "", nil, errTODO
}

// EventsTopic is `devices/{id}/messages/events/{bag}`.
func EventsTopic(deviceID string, bag PropertyBag) string { return "" }

// ParseEventsTopic decodes a D2C events topic.
func ParseEventsTopic(topic string) (deviceID string, bag PropertyBag, err error) {
	return "", nil, errTODO
}

// Username is a decoded MQTT CONNECT username `{host}/{deviceId}[/{moduleId}]/[?]api-version=...&...`.
type Username struct {
	HostName string
	DeviceID string
	ModuleID string
	Params   url.Values // api-version, DeviceClientType, model-id, c2d-ext, ...
}

// ParseUsername accepts every variant the official SDKs send (with or without `?`, extra params).
func ParseUsername(s string) (Username, error) { return Username{}, errTODO }

// FormatUsername renders `{host}/{deviceId}[/{moduleId}]/?api-version=2021-04-12` plus extra params
// in a stable order.
func FormatUsername(host, deviceID, moduleID string, extra url.Values) string { return "" }

// ClientID is deviceId, or deviceId/moduleId for a module.
func ClientID(deviceID, moduleID string) string { return "" }

// ParseClientID splits a client id into device and module ids and validates them.
func ParseClientID(s string) (deviceID, moduleID string, err error) { return "", "", errTODO }

// ---- message model (message.go) ----

// ParseAckMode accepts none|positive|negative|full ("" means none).
func ParseAckMode(s string) (AckMode, error) { return AckNone, errTODO }

// Wants reports whether a message with this ack mode produces feedback for status.
func (a AckMode) Wants(status FeedbackStatus) bool { return false }

// Validate checks ids, property names/values (Azure's character set), ack mode and the 64 KB rule.
func (m *Message) Validate() error { return errTODO }

// Size is what counts against MaxMessageSize: body + system property values + app property names
// and values.
func (m *Message) Size() int { return 0 }

// Property returns the first application property called name.
func (m *Message) Property(name string) (string, bool) { return "", false }

// ValidateDeviceID checks Azure's device id rules (≤128 ASCII from the allowed set).
func ValidateDeviceID(id string) error { return errTODO }

// ValidateMessageID checks a message/correlation id (≤128 chars, Azure's character set).
func ValidateMessageID(id string) error { return errTODO }

// ---- SAS tokens (sas.go) ----

// Typed token failures, for errors.Is; ParseSASToken/Verify wrap them with detail (and a clock-skew
// hint for expiry).
var (
	ErrTokenMalformed = errors.New("malformed SAS token")
	ErrTokenExpired   = errors.New("SAS token expired")
	ErrTokenResource  = errors.New("SAS token resource does not cover the target")
	ErrTokenSignature = errors.New("SAS token signature does not match")
)

// SASToken is a parsed `SharedAccessSignature sr=...&sig=...&se=...[&skn=...]` (fields in any order).
type SASToken struct {
	Resource  string    // sr, URL-decoded
	RawSR     string    // sr exactly as transmitted (what was signed)
	Signature string    // sig, URL-decoded (base64)
	Expiry    time.Time // se
	KeyName   string    // skn, empty for device-key tokens
}

// NewSASToken signs resourceURI with a base64 key, Azure's way; keyName may be empty.
func NewSASToken(resourceURI, base64Key, keyName string, expiry time.Time) (string, error) {
	return "", errTODO
}

// ParseSASToken parses a token without checking it.
func ParseSASToken(s string) (*SASToken, error) { return nil, errTODO }

// Verify checks the signature against base64Key (constant time), the expiry against now, and that
// the token's resource covers target by whole path segments (case-insensitive host).
func (t *SASToken) Verify(base64Key, target string, now time.Time) error { return errTODO }

// DeviceResource is `{host}/devices/{deviceId}` (module: `/modules/{moduleId}` appended).
func DeviceResource(host, deviceID, moduleID string) string { return "" }

// ---- connection strings (connstr.go) ----

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

// ParseDeviceConnectionString splits on ';' and at the first '='; rejects duplicates, unknown keys,
// missing keys and bad base64, naming the key.
func ParseDeviceConnectionString(s string) (DeviceConnectionString, error) {
	return DeviceConnectionString{}, errTODO
}

// String formats it the way the official SDKs do.
func (c DeviceConnectionString) String() string { return "" }

// Token returns the SAS token to CONNECT with: SharedAccessSignature as given, or one signed with the
// key for `{HostName}/devices/{id}` expiring at now+ttl.
func (c DeviceConnectionString) Token(now time.Time, ttl time.Duration) (string, error) {
	return "", errTODO
}

// ServiceConnectionString is `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`.
type ServiceConnectionString struct {
	HostName            string
	SharedAccessKeyName string
	SharedAccessKey     string
}

// ParseServiceConnectionString is ParseDeviceConnectionString's sibling for policies.
func ParseServiceConnectionString(s string) (ServiceConnectionString, error) {
	return ServiceConnectionString{}, errTODO
}

// String formats it the way the official SDKs do.
func (c ServiceConnectionString) String() string { return "" }

// Token signs `{HostName}` with skn=SharedAccessKeyName, expiring at now+ttl.
func (c ServiceConnectionString) Token(now time.Time, ttl time.Duration) (string, error) {
	return "", errTODO
}

// ---- extension (extension.go) ----

// DispositionFilter is `$c2d/devices/{id}/messages/devicebound/#`.
func DispositionFilter(deviceID string) string { return "" }

// DispositionTopic is where a device publishes a disposition for one delivery.
func DispositionTopic(deviceID, lockToken string, d Disposition) string { return "" }

// ParseDispositionTopic decodes a disposition topic.
func ParseDispositionTopic(topic string) (deviceID, lockToken string, d Disposition, err error) {
	return "", "", "", errTODO
}

// RejectReportEvent builds the D2C event (topic, JSON payload) reporting a refusal to a plain hub.
func RejectReportEvent(deviceID, originalMessageID, reason string) (topic string, payload []byte) {
	return "", nil
}

// ---- service API errors (errors.go) ----

// ErrorCode is Azure's numeric error code (e.g. 404001 DeviceNotFound).
type ErrorCode int

// Azure's codes that c2d returns.
const (
	CodeArgumentInvalid                 ErrorCode = 400004
	CodeIotHubUnauthorizedAccess        ErrorCode = 401002
	CodeIotHubQuotaExceeded             ErrorCode = 403002
	CodeDeviceMaximumQueueDepthExceeded ErrorCode = 403004
	CodeDeviceNotFound                  ErrorCode = 404001
	CodeDeviceMessageNotFound           ErrorCode = 404103 // c2d: no message with that id in the device's queue
	CodeDeviceAlreadyExists             ErrorCode = 409001
	CodePreconditionFailed              ErrorCode = 412001
	CodeDeviceMessageLockLost           ErrorCode = 412002
	CodeMessageTooLarge                 ErrorCode = 413001
	CodeThrottlingException             ErrorCode = 429001
	CodeServerError                     ErrorCode = 500001
	CodeServiceUnavailable              ErrorCode = 503001
)

// Name is Azure's error-code name, e.g. "DeviceMaximumQueueDepthExceeded".
func (c ErrorCode) Name() string { return "" }

// HTTPStatus is the code's HTTP status (its first three digits).
func (c ErrorCode) HTTPStatus() int { return int(c) / 1000 }

// ErrorResponse is the JSON error body of the service API. Message follows Azure's
// "ErrorCode:{Name};{text}" form; ErrorCode and Detail are c2d's machine-readable additions.
type ErrorResponse struct {
	Message   string    `json:"Message"`
	ErrorCode ErrorCode `json:"errorCode"`
	Code      string    `json:"code"`   // ErrorCode.Name()
	Detail    string    `json:"detail"` // human text, also what the CLI prints
}

// Error is a service-API failure as a Go error, for errors.As on both sides of the API.
type Error struct {
	Code   ErrorCode
	Detail string
}

func (e *Error) Error() string { return e.Code.Name() + ": " + e.Detail }

// Response renders e as the JSON error body.
func (e *Error) Response() ErrorResponse { return ErrorResponse{} }
