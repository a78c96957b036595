package iothub

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Reject-report names (extension, carried in a plain Azure D2C event's property bag).
const (
	ReportProperty            = "c2d-report"
	ReportReject              = "reject"
	ReportOriginalMessageProp = "c2d-original-mid"
	MaxLockTokenLength        = 128
)

// ValidateLockToken checks that a lock token can stand as one MQTT topic level: 1–128 printable
// ASCII bytes without '/', '+', '#' or space. The hub generates tokens; this guards the parser.
func ValidateLockToken(lt string) error {
	if lt == "" {
		return fmt.Errorf("%w: lock token is empty", ErrInvalid)
	}
	if len(lt) > MaxLockTokenLength {
		return fmt.Errorf("%w: lock token %s is longer than %d bytes", ErrInvalid, quote(lt), MaxLockTokenLength)
	}
	for i := 0; i < len(lt); i++ {
		if c := lt[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '+' || c == '#' {
			return fmt.Errorf("%w: lock token %s: byte %q at offset %d is not allowed", ErrInvalid, quote(lt), c, i)
		}
	}
	return nil
}

// ParseDisposition accepts complete|reject|abandon.
func ParseDisposition(s string) (Disposition, error) {
	switch d := Disposition(s); d {
	case DispositionComplete, DispositionReject, DispositionAbandon:
		return d, nil
	}
	return "", fmt.Errorf("%w: disposition %s: want complete, reject or abandon", ErrInvalid, quote(s))
}

// DispositionFilter is `$c2d/devices/{id}/messages/devicebound/#`.
func DispositionFilter(deviceID string) string {
	return DispositionPrefix + escapeTopicID(deviceID) + "/messages/devicebound/#"
}

// DispositionTopic is where a device publishes a disposition for one delivery.
func DispositionTopic(deviceID, lockToken string, d Disposition) string {
	return DispositionPrefix + escapeTopicID(deviceID) + "/messages/devicebound/" + lockToken + "/" + string(d)
}

// ParseDispositionTopic decodes a disposition topic.
func ParseDispositionTopic(topic string) (deviceID, lockToken string, d Disposition, err error) {
	fail := func(why string, args ...any) (string, string, Disposition, error) {
		return "", "", "", fmt.Errorf("%w: disposition topic %s: %s", ErrTopic, quote(topic), fmt.Sprintf(why, args...))
	}
	rest, ok := strings.CutPrefix(topic, DispositionPrefix)
	if !ok {
		return fail("does not start with %q", DispositionPrefix)
	}
	levels := strings.Split(rest, "/")
	if len(levels) != 5 || levels[1] != "messages" || levels[2] != "devicebound" {
		return fail("want %s{deviceId}/messages/devicebound/{lockToken}/{complete|reject|abandon}", DispositionPrefix)
	}
	if deviceID, err = unescapeTopicID(levels[0]); err != nil {
		return fail("%v", err)
	}
	if err = ValidateLockToken(levels[3]); err != nil {
		return fail("%v", err)
	}
	if d, err = ParseDisposition(levels[4]); err != nil {
		return fail("%v", err)
	}
	return deviceID, levels[3], d, nil
}

// ParseDispositionBody decodes a disposition payload: empty means no reason; otherwise a JSON object
// (unknown fields ignored). The reason is cut to MaxReasonLength.
func ParseDispositionBody(payload []byte) (DispositionBody, error) {
	var b DispositionBody
	if len(strings.TrimSpace(string(payload))) == 0 {
		return b, nil
	}
	if err := json.Unmarshal(payload, &b); err != nil {
		return DispositionBody{}, fmt.Errorf("%w: disposition body: %w", ErrInvalid, err)
	}
	b.Reason = TruncateReason(b.Reason)
	return b, nil
}

// TruncateReason cuts a reason to MaxReasonLength bytes at a UTF-8 boundary, replacing invalid UTF-8.
func TruncateReason(r string) string {
	r = strings.ToValidUTF8(r, "\uFFFD")
	if len(r) <= MaxReasonLength {
		return r
	}
	cut := MaxReasonLength
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut]
}

// RejectReportBag is the events-topic property bag of a reject report.
func RejectReportBag(originalMessageID string) PropertyBag {
	return PropertyBag{
		{Name: ReportProperty, Value: ReportReject},
		{Name: ReportOriginalMessageProp, Value: originalMessageID},
		{Name: PropContentType, Value: "application/json"},
		{Name: PropContentEncoding, Value: "utf-8"},
	}
}

// RejectReportEvent builds the D2C event (topic, JSON payload) reporting a refusal to a plain hub.
// The topic's bag is `c2d-report=reject&c2d-original-mid={mid}&$.ct=application/json&$.ce=utf-8`
// (percent-encoded); the reason is cut to MaxReasonLength.
func RejectReportEvent(deviceID, originalMessageID, reason string) (topic string, payload []byte) {
	payload, _ = json.Marshal(RejectReport{
		OriginalMessageID: originalMessageID,
		Disposition:       string(DispositionReject),
		Reason:            TruncateReason(reason),
	})
	return EventsTopic(deviceID, RejectReportBag(originalMessageID)), payload
}

// ParseRejectReport recognises a reject report among D2C events: ok is false (and err nil) for any
// other event. The body must be a RejectReport whose originalMessageId matches the bag's.
func ParseRejectReport(bag PropertyBag, payload []byte) (r RejectReport, ok bool, err error) {
	if v, _ := bag.Get(ReportProperty); v != ReportReject {
		return RejectReport{}, false, nil
	}
	if err := json.Unmarshal(payload, &r); err != nil {
		return RejectReport{}, true, fmt.Errorf("%w: reject report body: %w", ErrInvalid, err)
	}
	if mid, _ := bag.Get(ReportOriginalMessageProp); mid != r.OriginalMessageID {
		return RejectReport{}, true, fmt.Errorf("%w: reject report: %s=%s but body says %s", ErrInvalid,
			ReportOriginalMessageProp, quote(mid), quote(r.OriginalMessageID))
	}
	r.Reason = TruncateReason(r.Reason)
	return r, true, nil
}
