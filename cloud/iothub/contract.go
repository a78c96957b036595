package iothub

// This file fixes the exported surface that the hub, the agent and the CLI are written against.
// Bodies live in the files named in each comment.

import (
	"time"
)

// APIVersion is the api-version c2d speaks and sends (username query, REST query).
const APIVersion = "2021-04-12"

// Azure's limits (azure-c2d.md §4).
const (
	MaxMessageSize  = 64 * 1024 // body + system property values + application property names and values
	MaxIDLength     = 128       // device ids and message ids
	MaxReasonLength = 1024      // extension: longest reject reason kept; longer ones are truncated
)

// AckMode is the iothub-ack value of a message: which outcomes produce a feedback record.
type AckMode string

const (
	AckNone     AckMode = "none"
	AckPositive AckMode = "positive"
	AckNegative AckMode = "negative"
	AckFull     AckMode = "full"
)

// FeedbackStatus is Azure's statusCode of a feedback record, also the terminal outcome of a message.
type FeedbackStatus string

const (
	StatusSuccess               FeedbackStatus = "Success"
	StatusExpired               FeedbackStatus = "Expired"
	StatusDeliveryCountExceeded FeedbackStatus = "DeliveryCountExceeded"
	StatusRejected              FeedbackStatus = "Rejected"
	StatusPurged                FeedbackStatus = "Purged"
)

// FeedbackContentType is the content type of a feedback message (a JSON array of FeedbackRecord).
const FeedbackContentType = "application/vnd.microsoft.iothub.feedback.json"

// AppProperty is one application property; order is preserved end to end.
type AppProperty struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Message is one cloud-to-device message as the hub stores it and the device receives it.
// The zero ExpiryTime means "no per-message expiry" (the hub applies its default TTL).
type Message struct {
	MessageID       string        // $.mid
	CorrelationID   string        // $.cid
	UserID          string        // $.uid
	To              string        // $.to, /devices/{id}/messages/devicebound
	ExpiryTime      time.Time     // $.exp, ISO-8601 UTC
	Ack             AckMode       // iothub-ack
	ContentType     string        // $.ct
	ContentEncoding string        // $.ce
	Properties      []AppProperty // application properties, in the sender's order
	Body            []byte

	// LockToken identifies one delivery. The hub sets it on every delivery (the broker maps a
	// PUBACK back to it); it goes on the wire as $c2d.lt only to connections that opted into the
	// disposition extension (DeliveryTopic's ext flag). A plain Azure hub never sends it.
	LockToken string
}

// Property is one key of an MQTT property bag. Null tells `key` (null) from `key=` (empty).
type Property struct {
	Name  string
	Value string
	Null  bool
}

// PropertyBag is the decoded tail of a device-bound or events topic, in wire order.
type PropertyBag []Property

// Disposition is how a device settles a delivered message (extension over MQTT; Azure's HTTPS API has
// the same three).
type Disposition string

const (
	DispositionComplete Disposition = "complete"
	DispositionReject   Disposition = "reject"
	DispositionAbandon  Disposition = "abandon"
)

// Extension names on the wire (docs/protocol.md, "c2d extension").
const (
	// ExtensionParam is the CONNECT username query parameter by which a device opts in:
	// `...?api-version=2021-04-12&c2d-ext=dispositions`.
	ExtensionParam        = "c2d-ext"
	ExtensionDispositions = "dispositions"
	// LockTokenProperty carries the lock token in the device-bound property bag of opted-in devices.
	LockTokenProperty = "$c2d.lt"
	// DispositionPrefix starts every disposition topic:
	// `$c2d/devices/{deviceId}/messages/devicebound/{lockToken}/{complete|reject|abandon}`.
	DispositionPrefix = "$c2d/devices/"
)

// DispositionBody is the JSON payload of a disposition publish (may be empty for complete/abandon).
type DispositionBody struct {
	Reason string `json:"reason,omitempty"`
}

// RejectReport is the JSON body of the D2C event by which the agent reports a refusal to a hub
// without the extension (plain Azure: the message was completed by PUBACK). Its events-topic
// property bag carries `c2d-report=reject` and `c2d-original-mid={id}`.
type RejectReport struct {
	OriginalMessageID string `json:"originalMessageId"`
	Disposition       string `json:"disposition"` // "reject"
	Reason            string `json:"reason"`
}

// FeedbackRecord is one entry of a feedback message. The first six fields are Azure's, unchanged;
// the rest are c2d's additions (omitted when empty, so Azure parsers see nothing new).
type FeedbackRecord struct {
	OriginalMessageID  string         `json:"originalMessageId"`
	DeviceID           string         `json:"deviceId"`
	DeviceGenerationID string         `json:"deviceGenerationId"`
	EnqueuedTimeUTC    time.Time      `json:"enqueuedTimeUtc"`
	StatusCode         FeedbackStatus `json:"statusCode"`
	Description        string         `json:"description"`

	Reason        string `json:"reason,omitempty"`        // extension: the device's reject reason
	DeliveryCount int    `json:"deliveryCount,omitempty"` // extension: deliveries made
	CorrelationID string `json:"correlationId,omitempty"` // extension: the original $.cid
}

// DeviceStatus is a registry device's status.
type DeviceStatus string

const (
	DeviceEnabled  DeviceStatus = "enabled"
	DeviceDisabled DeviceStatus = "disabled"
)

// Device is Azure's registry device JSON (api-version 2021-04-12), the fields c2d uses.
type Device struct {
	DeviceID                   string         `json:"deviceId"`
	GenerationID               string         `json:"generationId,omitempty"`
	ETag                       string         `json:"etag,omitempty"`
	Status                     DeviceStatus   `json:"status,omitempty"`
	StatusReason               string         `json:"statusReason,omitempty"`
	ConnectionState            string         `json:"connectionState,omitempty"` // Connected | Disconnected
	ConnectionStateUpdatedTime time.Time      `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time      `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int            `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication `json:"authentication"`
}

// Authentication is the device's credential block; c2d supports "sas".
type Authentication struct {
	Type         string       `json:"type"` // "sas"
	SymmetricKey SymmetricKey `json:"symmetricKey"`
}

// SymmetricKey holds base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// MessageState is where a message is in the hub's lifecycle (azure-c2d.md §4).
type MessageState string

const (
	StateEnqueued     MessageState = "Enqueued"
	StateInvisible    MessageState = "Invisible" // locked: delivered, awaiting the device's disposition
	StateCompleted    MessageState = "Completed"
	StateDeadLettered MessageState = "DeadLettered" // Rejected, Expired or DeliveryCountExceeded
	StatePurged       MessageState = "Purged"
)

// SendRequest is the JSON body of POST /devices/{id}/messages/devicebound (c2d's service API;
// Azure sends over AMQP). Body is raw bytes (base64 in JSON).
type SendRequest struct {
	MessageID       string        `json:"messageId,omitempty"` // the hub assigns a UUID when empty
	CorrelationID   string        `json:"correlationId,omitempty"`
	UserID          string        `json:"userId,omitempty"`
	ExpiryTimeUTC   *time.Time    `json:"expiryTimeUtc,omitempty"` // absolute expiry; nil = hub default TTL
	Ack             AckMode       `json:"ack,omitempty"`
	ContentType     string        `json:"contentType,omitempty"`
	ContentEncoding string        `json:"contentEncoding,omitempty"`
	Properties      []AppProperty `json:"properties,omitempty"`
	Body            []byte        `json:"body,omitempty"`
}

// SendResult answers a send: the message is durable when this is returned.
type SendResult struct {
	DeviceID        string    `json:"deviceId"`
	MessageID       string    `json:"messageId"`
	SequenceNumber  int64     `json:"sequenceNumber"`
	EnqueuedTimeUTC time.Time `json:"enqueuedTimeUtc"`
	ExpiryTimeUTC   time.Time `json:"expiryTimeUtc"`
}

// MessageStatus is one message's place in the lifecycle: a queue listing row, and the answer of
// GET /devices/{id}/messages/devicebound/{messageId} (which can long-poll for a terminal state).
type MessageStatus struct {
	DeviceID        string         `json:"deviceId"`
	MessageID       string         `json:"messageId"`
	CorrelationID   string         `json:"correlationId,omitempty"`
	SequenceNumber  int64          `json:"sequenceNumber"`
	State           MessageState   `json:"state"`
	DeliveryCount   int            `json:"deliveryCount"`
	Ack             AckMode        `json:"ack"`
	EnqueuedTimeUTC time.Time      `json:"enqueuedTimeUtc"`
	ExpiryTimeUTC   time.Time      `json:"expiryTimeUtc"`
	LockedUntilUTC  *time.Time     `json:"lockedUntilUtc,omitempty"`
	Outcome         FeedbackStatus `json:"outcome,omitempty"` // set once terminal
	Reason          string         `json:"reason,omitempty"`  // the device's reject reason
	SettledTimeUTC  *time.Time     `json:"settledTimeUtc,omitempty"`
	Properties      []AppProperty  `json:"properties,omitempty"`
}

// PurgeResult is Azure's answer to DELETE /devices/{id}/commands.
type PurgeResult struct {
	DeviceID            string `json:"deviceId"`
	TotalMessagesPurged int    `json:"totalMessagesPurged"`
}

// FeedbackBatch is one feedback message handed to a service client: records plus the lock token
// with which it completes or abandons the batch.
type FeedbackBatch struct {
	LockToken       string           `json:"lockToken"`
	EnqueuedTimeUTC time.Time        `json:"enqueuedTimeUtc"`
	Records         []FeedbackRecord `json:"records"`
}

// HubStatus answers GET /statistics/service (Azure's connectedDeviceCount, plus c2d's fields).
type HubStatus struct {
	ConnectedDeviceCount  int    `json:"connectedDeviceCount"`
	TotalDeviceCount      int    `json:"totalDeviceCount"`
	EnabledDeviceCount    int    `json:"enabledDeviceCount"`
	QueuedMessageCount    int    `json:"queuedMessageCount"`   // Enqueued + Invisible, all devices
	PendingFeedbackCount  int    `json:"pendingFeedbackCount"` // records not yet completed by a service
	Version               string `json:"version"`
	ExtensionDispositions bool   `json:"extensionDispositions"`
	// A c2d-hub cluster (c2d extension): the node that answered (ConnectedDeviceCount counts its
	// sessions) and every node with its last heartbeat. Absent on a single hub.
	Node  string       `json:"node,omitempty"`
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NodeStatus is one node of a c2d-hub cluster.
type NodeStatus struct {
	NodeID           string    `json:"nodeId"`
	StartedTimeUTC   time.Time `json:"startedTimeUtc"`
	HeartbeatTimeUTC time.Time `json:"heartbeatTimeUtc"`
	DeviceCount      int       `json:"connectedDeviceCount"` // sessions it holds, as of its heartbeat
	Version          string    `json:"version"`
	// APIURL is where the other nodes reach its service API (direct methods are passed there).
	APIURL string `json:"apiUrl,omitempty"`
}
