package hub

// This file fixes the surface that cloud/broker and cloud/api are written against. The hub core
// helper replaces the stub bodies in stubs.go with the real implementation; signatures are the
// contract.

import (
	"errors"
	"log/slog"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Config holds the hub's queue and feedback settings; the zero value of a field means Azure's
// default (see Defaults). Validate reports the first bad field by its YAML name.
type Config struct {
	HostName string // the name devices sign their SAS tokens for (and that TLS certificates carry)

	// Clock gives the hub its timer and, unless Now is set, its time; nil means SystemClock.
	// Tests use a manual clock to cross lock, TTL and feedback deadlines exactly.
	Clock Clock

	DefaultTTL       time.Duration // 1h: expiry of a message that sets none
	MinTTL           time.Duration // 1m
	MaxTTL           time.Duration // 48h
	LockTimeout      time.Duration // 1m: how long a delivered message stays Invisible
	MaxDeliveryCount int           // 10 (1–100)
	MaxQueueDepth    int           // 50 messages per device (Enqueued + Invisible)
	MaxInFlight      int           // 16: deliveries outstanding per device connection

	FeedbackBatchSize        int           // 64 records
	FeedbackInterval         time.Duration // 1s: longest a record waits for its batch
	FeedbackTTL              time.Duration // 1h
	FeedbackLockTimeout      time.Duration // 60s
	FeedbackMaxDeliveryCount int           // 10

	// SettledRetention is how long a settled message's outcome stays queryable through
	// MessageStatus/WaitSettled (c2d addition; settled_retention). 24h.
	SettledRetention time.Duration

	// MaxTokenLifetime bounds how far in the future a device's SAS token may expire
	// (auth.max_token_lifetime): a token with a later expiry is refused, so a leaked token cannot
	// keep a session for ever (issue #17: se=2^62 was accepted). 8760h (a year).
	MaxTokenLifetime time.Duration

	// Logger receives the hub's structured logs; nil discards them.
	Logger *slog.Logger

	// Now is the hub's clock; nil means time.Now corrected to the store's clock (PostgreSQL's,
	// so every node of a cluster decides lock expiry and TTL by one clock). Tests move it to cross
	// lock/TTL boundaries.
	Now func() time.Time

	// Store is where the state lives (store, --store): "" or "sqlite" for DATA/hub.db, or a
	// PostgreSQL connection string (postgres://… URL or libpq key=value) that the nodes of a
	// cluster share.
	Store string
	// NodeID names this node among those sharing a store (default: the host name).
	NodeID string
}

// Permission is one right a shared access policy grants (Azure's names).
type Permission string

const (
	RegistryRead   Permission = "RegistryRead"
	RegistryWrite  Permission = "RegistryWrite"
	ServiceConnect Permission = "ServiceConnect"
	DeviceConnect  Permission = "DeviceConnect"
)

// Policy is a shared access policy: iothubowner, service, registryRead, registryReadWrite, device.
type Policy struct {
	Name         string
	PrimaryKey   string
	SecondaryKey string
	Rights       []Permission
}

// Conn is one connected, subscribed device session as the broker sees it. Deliver must not block
// on the network for long: the broker queues the PUBLISH (QoS 1) and returns.
type Conn interface {
	DeviceID() string
	// Extension reports whether this connection opted into explicit dispositions
	// (username param c2d-ext=dispositions). Otherwise its PUBACK completes.
	Extension() bool
	// Deliver sends one message (LockToken set) to the device as a QoS 1 PUBLISH on its
	// device-bound topic. The broker remembers packet id → lock token to turn the PUBACK into
	// Settle(complete) for non-extension connections.
	Deliver(m *iothub.Message) error
}

// AuthRequest is what a device presents at CONNECT.
type AuthRequest struct {
	ClientID string
	Username string
	Password string // SAS token
}

// AuthResult is who connected.
type AuthResult struct {
	DeviceID  string
	ModuleID  string
	Extension bool // opted into the disposition extension
	// TokenExpiry is the SAS token's se: Azure disconnects a device when its token expires, and
	// the broker enforces the same.
	TokenExpiry time.Time
}

// Typed outcomes, for errors.Is. Service-facing failures are *iothub.Error values (with Azure's
// code) that also match these sentinels via Is.
var (
	ErrDeviceNotFound     = errors.New("device not found")
	ErrDeviceExists       = errors.New("device already exists")
	ErrDeviceDisabled     = errors.New("device is disabled")
	ErrQueueFull          = errors.New("device queue is full")
	ErrMessageNotFound    = errors.New("message not found")
	ErrLockLost           = errors.New("lock lost")
	ErrPreconditionFailed = errors.New("etag does not match")
	ErrUnauthorized       = errors.New("unauthorized")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrClosed             = errors.New("hub closed")
	// ErrStoreUnavailable: the store's server cannot be reached (PostgreSQL down or cut off).
	// Nothing was acknowledged; the node recovers by itself when the server is back.
	ErrStoreUnavailable = errors.New("store unavailable")
	// ErrCommitUnknown: the store's server went away while committing, so the write may or may
	// not have become durable. It comes with ErrStoreUnavailable. A send resolves it by asking
	// the store again (commit_unknown.go); its error then says which it was.
	ErrCommitUnknown = errors.New("the store did not answer the commit")
)

// Events is the hub's observer, for metrics and logs. Any field may be nil. Calls are synchronous:
// keep them cheap. Abandoned is called for every return to Enqueued (abandon, lock expiry,
// detach, failed Deliver); Settled for every terminal outcome, sendToSettle measured from the
// message's enqueued time.
type Events struct {
	Sent      func(deviceID string)
	Delivered func(deviceID string)
	Settled   func(deviceID string, outcome iothub.FeedbackStatus, sendToSettle time.Duration)
	Abandoned func(deviceID string)
	Connected func(deviceID string, connected bool)
	// Stage hears how long one stage of a command's path took (stages.go).
	Stage func(stage Stage, d time.Duration)
}
