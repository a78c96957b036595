package iothub

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Direct methods (Azure): the hub publishes `$iothub/methods/POST/{name}/?$rid={rid}` to a device
// subscribed to MethodsFilter; the device answers on `$iothub/methods/res/{status}/?$rid={rid}`.
const (
	MethodsFilter        = "$iothub/methods/POST/#"
	MethodsRequestPrefix = "$iothub/methods/POST/"
	MethodsResponsePref  = "$iothub/methods/res/"
)

// Azure's direct-method limits (azure-methods-twin.md, "REST: invoke a method").
const (
	MaxMethodPayload             = 128 * 1024 // request and response payload, as JSON
	MaxMethodNameLength          = 128        // c2d's bound: one topic level
	DefaultMethodResponseTimeout = 30 * time.Second
	MinMethodResponseTimeout     = 5 * time.Second
	MaxMethodResponseTimeout     = 300 * time.Second
	MaxMethodConnectTimeout      = 300 * time.Second
)

// ForwardedHeader (c2d extension) marks a direct-method call one node of a c2d-hub cluster passed
// to the node holding the device's session; its value is the sending node's id. A node that gets
// it runs the call on its own sessions only and never passes it on: a call makes at most one
// extra hop and never loops.
const ForwardedHeader = "C2D-Forwarded-By"

// MethodRequest is the body of `POST /twins/{id}/methods` (Azure's CloudToDeviceMethod). A nil
// timeout means Azure's default (30 s to answer; 0 s to connect: the device must be online).
type MethodRequest struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload,omitempty"`
	ResponseTimeoutInSeconds *int            `json:"responseTimeoutInSeconds,omitempty"`
	ConnectTimeoutInSeconds  *int            `json:"connectTimeoutInSeconds,omitempty"`
}

// MethodResult is the answer of `POST /twins/{id}/methods`: the device's status and payload.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// Timeouts validates the request and returns its response and connect timeouts with Azure's
// defaults and ranges applied (response 5–300 s, default 30; connect 0–300 s, default 0).
func (r MethodRequest) Timeouts() (response, connect time.Duration, err error) {
	if err := ValidateMethodName(r.MethodName); err != nil {
		return 0, 0, err
	}
	if len(r.Payload) > MaxMethodPayload {
		return 0, 0, fmt.Errorf("%w: payload: %d bytes of JSON, more than direct methods' %d", ErrInvalid, len(r.Payload), MaxMethodPayload)
	}
	if len(r.Payload) > 0 && !json.Valid(r.Payload) {
		return 0, 0, fmt.Errorf("%w: payload is not valid JSON", ErrInvalid)
	}
	response = DefaultMethodResponseTimeout
	if p := r.ResponseTimeoutInSeconds; p != nil {
		response = time.Duration(*p) * time.Second
		if response < MinMethodResponseTimeout || response > MaxMethodResponseTimeout {
			return 0, 0, fmt.Errorf("%w: responseTimeoutInSeconds: %d is outside %d–%d", ErrInvalid, *p,
				int(MinMethodResponseTimeout/time.Second), int(MaxMethodResponseTimeout/time.Second))
		}
	}
	if p := r.ConnectTimeoutInSeconds; p != nil {
		connect = time.Duration(*p) * time.Second
		if connect < 0 || connect > MaxMethodConnectTimeout {
			return 0, 0, fmt.Errorf("%w: connectTimeoutInSeconds: %d is outside 0–%d", ErrInvalid, *p, int(MaxMethodConnectTimeout/time.Second))
		}
	}
	return response, connect, nil
}

// ValidateMethodName accepts a method name that can stand as one MQTT topic level: 1–128 bytes of
// printable ASCII other than space, '/', '+', '#', '?', '%' and '$'.
func ValidateMethodName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: methodName is empty", ErrInvalid)
	}
	if len(name) > MaxMethodNameLength {
		return fmt.Errorf("%w: methodName is %d bytes, longer than %d", ErrInvalid, len(name), MaxMethodNameLength)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("/+#?%$", c) >= 0 {
			return fmt.Errorf("%w: methodName %s: character %q at offset %d is not allowed", ErrInvalid, quote(name), c, i)
		}
	}
	return nil
}

// MethodRequestTopic is `$iothub/methods/POST/{name}/?$rid={rid}`.
func MethodRequestTopic(name, rid string) string {
	return MethodsRequestPrefix + name + "/?$rid=" + url.QueryEscape(rid)
}

// MethodResponseTopic is `$iothub/methods/res/{status}/?$rid={rid}`.
func MethodResponseTopic(status int, rid string) string {
	return MethodsResponsePref + strconv.Itoa(status) + "/?$rid=" + url.QueryEscape(rid)
}

// ParseMethodRequestTopic decodes `$iothub/methods/POST/{name}/?$rid={rid}` (the device side).
func ParseMethodRequestTopic(topic string) (name, rid string, err error) {
	level, rid, err := splitRIDTopic(topic, MethodsRequestPrefix)
	if err != nil {
		return "", "", err
	}
	if err := ValidateMethodName(level); err != nil {
		return "", "", fmt.Errorf("%w: %s: %w", ErrTopic, quote(topic), err)
	}
	return level, rid, nil
}

// ParseMethodResponseTopic decodes `$iothub/methods/res/{status}/?$rid={rid}` (the hub side). The
// status is any integer the device chose (Azure passes it through).
func ParseMethodResponseTopic(topic string) (status int, rid string, err error) {
	level, rid, err := splitRIDTopic(topic, MethodsResponsePref)
	if err != nil {
		return 0, "", err
	}
	status, err = strconv.Atoi(level)
	if err != nil || len(level) > 10 {
		return 0, "", fmt.Errorf("%w: %s: status %s is not an integer", ErrTopic, quote(topic), quote(level))
	}
	return status, rid, nil
}

// splitRIDTopic matches `{prefix}{level}/?{query}` with a non-empty $rid in the query.
func splitRIDTopic(topic, prefix string) (level, rid string, err error) {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %s does not start with %q", ErrTopic, quote(topic), prefix)
	}
	level, query, ok := strings.Cut(rest, "/?")
	if !ok || strings.Contains(level, "/") {
		return "", "", fmt.Errorf("%w: %s: want %s{...}/?$rid={rid}", ErrTopic, quote(topic), prefix)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: query: %w", ErrTopic, quote(topic), err)
	}
	rid = q.Get("$rid")
	if rid == "" {
		return "", "", fmt.Errorf("%w: %s has no $rid", ErrTopic, quote(topic))
	}
	return level, rid, nil
}

// MethodPayload turns a device's response body into the JSON payload of a MethodResult: an empty
// body is null, valid JSON is kept as it is, anything else becomes a JSON string of its text.
func MethodPayload(body []byte) json.RawMessage {
	if len(strings.TrimSpace(string(body))) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(body) {
		return json.RawMessage(body)
	}
	b, _ := json.Marshal(strings.ToValidUTF8(string(body), "\uFFFD"))
	return b
}
