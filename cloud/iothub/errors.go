package iothub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

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
	CodeGatewayTimeout                  ErrorCode = 504101

	// CodeDeviceNotOnline is Azure's direct-method "device not connected". It shares its number
	// with c2d's CodeDeviceMessageNotFound, so its name travels in Error.Name (NotOnline builds one).
	CodeDeviceNotOnline ErrorCode = 404103
)

// NameDeviceNotOnline is CodeDeviceNotOnline's name.
const NameDeviceNotOnline = "DeviceNotOnline"

// NotOnline is the 404103 DeviceNotOnline error of a direct method.
func NotOnline(format string, args ...any) *Error {
	return &Error{Code: CodeDeviceNotOnline, Name: NameDeviceNotOnline, Detail: fmt.Sprintf(format, args...)}
}

var codeNames = map[ErrorCode]string{
	CodeArgumentInvalid:                 "ArgumentInvalid",
	CodeIotHubUnauthorizedAccess:        "IotHubUnauthorizedAccess",
	CodeIotHubQuotaExceeded:             "IotHubQuotaExceeded",
	CodeDeviceMaximumQueueDepthExceeded: "DeviceMaximumQueueDepthExceeded",
	CodeDeviceNotFound:                  "DeviceNotFound",
	CodeDeviceMessageNotFound:           "DeviceMessageNotFound",
	CodeDeviceAlreadyExists:             "DeviceAlreadyExists",
	CodePreconditionFailed:              "PreconditionFailed",
	CodeDeviceMessageLockLost:           "DeviceMessageLockLost",
	CodeMessageTooLarge:                 "MessageTooLarge",
	CodeThrottlingException:             "ThrottlingException",
	CodeServerError:                     "ServerError",
	CodeServiceUnavailable:              "ServiceUnavailable",
	CodeGatewayTimeout:                  "GatewayTimeout",
}

// Name is Azure's error-code name, e.g. "DeviceMaximumQueueDepthExceeded". Unknown codes render as
// "ErrorCode{n}".
func (c ErrorCode) Name() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return "ErrorCode" + strconv.Itoa(int(c))
}

// String is "{code} {Name}", e.g. "404001 DeviceNotFound".
func (c ErrorCode) String() string { return strconv.Itoa(int(c)) + " " + c.Name() }

// ErrorCodeByName is Name's inverse (false for names c2d does not use).
func ErrorCodeByName(name string) (ErrorCode, bool) {
	for c, n := range codeNames {
		if n == name {
			return c, true
		}
	}
	return 0, false
}

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
	// Name overrides Code.Name() where Azure gives one number two names (404103); usually "".
	Name string
}

// CodeName is e.Name when set, else e.Code.Name().
func (e *Error) CodeName() string {
	if e.Name != "" {
		return e.Name
	}
	return e.Code.Name()
}

func (e *Error) Error() string { return e.CodeName() + ": " + e.Detail }

// Is makes errors.Is(err, &Error{Code: c}) true for any *Error with code c (Detail is ignored);
// a target with a Name matches only that name.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) || t == nil {
		return false
	}
	return t.Code == e.Code && (t.Name == "" || t.Name == e.CodeName())
}

// Errorf builds an *Error.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Response renders e as the JSON error body.
func (e *Error) Response() ErrorResponse {
	return ErrorResponse{
		Message:   "ErrorCode:" + e.CodeName() + ";" + e.Detail,
		ErrorCode: e.Code,
		Code:      e.CodeName(),
		Detail:    e.Detail,
	}
}

// ParseErrorResponse turns an error body back into an *Error: c2d's errorCode/detail fields when
// present, else Azure's "ErrorCode:{Name};{text}" Message, else the HTTP status with the raw body.
func ParseErrorResponse(httpStatus int, body []byte) *Error {
	var r ErrorResponse
	if json.Unmarshal(body, &r) == nil {
		if r.ErrorCode != 0 {
			e := &Error{Code: r.ErrorCode, Detail: r.Detail}
			if r.Code != "" && r.Code != r.ErrorCode.Name() && r.Code == NameDeviceNotOnline {
				e.Name = r.Code
			}
			return e
		}
		if rest, ok := strings.CutPrefix(r.Message, "ErrorCode:"); ok {
			name, detail, _ := strings.Cut(rest, ";")
			if name == NameDeviceNotOnline {
				return NotOnline("%s", detail)
			}
			if c, ok := ErrorCodeByName(name); ok {
				return &Error{Code: c, Detail: detail}
			}
		}
	}
	code := ErrorCode(httpStatus * 1000)
	if httpStatus == 400 {
		code = CodeArgumentInvalid
	}
	return &Error{Code: code, Detail: strings.TrimSpace(string(body))}
}
