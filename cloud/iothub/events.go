package iothub

import "time"

// DeviceEvent is one device-to-cloud message as `c2d events` shows it: Azure's system properties
// ($.mid, $.cid, $.ct, $.ce), the application properties in wire order, and the body.
type DeviceEvent struct {
	SequenceNumber  int64         `json:"sequenceNumber"`
	DeviceID        string        `json:"deviceId"`
	EnqueuedTimeUTC time.Time     `json:"enqueuedTimeUtc"`
	MessageID       string        `json:"messageId,omitempty"`
	CorrelationID   string        `json:"correlationId,omitempty"`
	ContentType     string        `json:"contentType,omitempty"`
	ContentEncoding string        `json:"contentEncoding,omitempty"`
	Properties      []AppProperty `json:"properties"`
	Body            []byte        `json:"body"`
	BodySize        int           `json:"bodySize"`
	Truncated       bool          `json:"truncated,omitempty"` // Body holds the first 16 KiB (c2d-hub's hub.MaxEventBody)
}

// EventsAnswer is the service API's GET /messages/events (c2d's extension): the events after the
// asked sequence number, oldest first, and the number to ask after next.
type EventsAnswer struct {
	Events []DeviceEvent `json:"events"`
	Next   int64         `json:"next"`
}
