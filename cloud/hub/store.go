package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// store is the durable state behind the hub. The queue logic sees only this interface and the
// typed storeTx, so it does not depend on SQLite and another store (PostgreSQL behind several hubs)
// can replace it.
type store interface {
	// update runs fn in a write transaction and returns after the transaction committed (fn's
	// error, or the commit's). Concurrent updates are group-committed: each runs inside its own
	// savepoint of one shared transaction, so a failing fn undoes only its own writes.
	update(ctx context.Context, fn func(tx storeTx) error) error
	// updateFor is update for an operation on one device (key: its id). A store with several
	// writers (PostgreSQL) runs every operation on one key on the same writer, so its concurrent
	// transactions never wait for each other's locks on a device's rows.
	updateFor(ctx context.Context, key string, fn func(tx storeTx) error) error
	// view runs fn in a read-only transaction (a consistent snapshot).
	view(ctx context.Context, fn func(tx storeTx) error) error
	// close finishes the updates already submitted, then closes; later calls return ErrClosed.
	close() error
	// ping checks that the store answers (the node's health).
	ping(ctx context.Context) error
	// now reads the store's clock (the database server's for PostgreSQL).
	now(ctx context.Context) (time.Time, error)
	// shared reports whether other nodes use the store too (PostgreSQL): then state held by a
	// node that is not this one (its locked messages) is not this node's to reset at start.
	shared() bool
	// notify sends a wake-up to every node; listen receives them (shared stores only).
	notify(ctx context.Context, payload string) error
	listen(ctx context.Context, ready func(), fn func(payload string)) error
}

// deviceRow is a registry entry as stored.
type deviceRow struct {
	ID           string
	GenerationID string
	ETag         string
	Status       iothub.DeviceStatus
	StatusReason string
	PrimaryKey   string
	SecondaryKey string
	LastSeq      int64 // the last sequence number given (0: none yet)
	UpdatedAt    time.Time
}

// msgRow is a message as stored: pending (State Enqueued/Invisible) or settled (Outcome set).
type msgRow struct {
	DeviceID        string
	Seq             int64
	xid             int64 // PostgreSQL: the transaction that inserted it (commit_unknown.go); 0 otherwise
	MessageID       string
	CorrelationID   string
	UserID          string
	Ack             iothub.AckMode
	ContentType     string
	ContentEncoding string
	Properties      []iothub.AppProperty
	Body            []byte
	EnqueuedAt      time.Time
	ExpiresAt       time.Time
	ExplicitExpiry  bool // the sender set the expiry ($.exp is delivered only then)
	State           iothub.MessageState
	DeliveryCount   int
	LockToken       string
	LockedUntil     time.Time

	Outcome   iothub.FeedbackStatus
	Reason    string
	SettledAt time.Time

	// storedProps is Properties as the store keeps them (JSON), when known: read from the store,
	// or encoded by Send before its transaction. Writes store it as is, so the group-committing
	// writer neither encodes nor (for a settle, which takes a message without decoding them)
	// decodes properties. A message's properties never change after its send.
	storedProps string
}

// propsJSON is m's properties as stored.
func (m *msgRow) propsJSON() (string, error) {
	if m.storedProps != "" {
		return m.storedProps, nil
	}
	return marshalProps(m.Properties)
}

// batchRow is a feedback batch as stored.
type batchRow struct {
	ID            int64
	EnqueuedAt    time.Time
	ExpiresAt     time.Time
	DeliveryCount int
	LockToken     string
	LockedUntil   time.Time
}

// storeTx is what the hub does to its state inside one transaction.
type storeTx interface {
	// registry
	device(id string) (deviceRow, bool, error)
	devices() ([]deviceRow, error)
	insertDevice(d deviceRow) error
	updateDevice(d deviceRow) error
	deleteDevice(id string) error // with its messages, settled outcomes and pending feedback
	policies() ([]Policy, error)
	insertPolicy(p Policy) error
	updatePolicyKeys(name, primaryKey, secondaryKey string) error

	// pending messages
	// nextSeq takes the device's next sequence number when fewer than maxPending messages are
	// pending: seq > 0. Otherwise it changes nothing and returns seq 0 with the pending count
	// (found false: no such device).
	nextSeq(deviceID string, maxPending int) (seq int64, pending int, found bool, err error)
	pendingCount(deviceID string) (int, error)
	pendingCounts() (map[string]int, error)
	insertMessage(m *msgRow) error
	pending(deviceID string) ([]msgRow, error)
	byToken(deviceID, token string) (msgRow, bool, error)
	byMessageID(deviceID, messageID string) (msgRow, bool, error) // pending or settled, newest
	// lockNext locks up to limit of the device's Enqueued messages, oldest first, for one
	// delivery each (one statement): Invisible until until, delivery count + 1, lock token prefix
	// followed by the sequence number. It returns them as locked, in sequence order.
	lockNext(deviceID string, limit int, until time.Time, prefix string) ([]msgRow, error)
	requeue(deviceID string, seq int64) error
	settle(m *msgRow) error // moves m to the settled outcomes (m.Outcome, Reason, SettledAt set)
	// takeLocked removes and returns the device's message locked under token, if it is Invisible
	// and its lock is valid at now (one statement: the lookup and the removal of a settle);
	// insertSettled then records its outcome. Its properties are returned as stored only
	// (storedProps; Properties nil).
	takeLocked(deviceID, token string, now time.Time) (msgRow, bool, error)
	insertSettled(m *msgRow) error
	// enqueue, lockNextOwned and settleLocked are a command's three writes, each in as few
	// statements as the store allows (store_sql_hot.go): nextSeq and insertMessage; lockNext
	// while o holds the device (errFenced otherwise); a complete or reject (takeLocked and
	// insertSettled, the returned message as settled) while o holds the device.
	enqueue(m *msgRow, maxPending int) (seq int64, pending int, found bool, err error)
	// enqueueFirst is enqueue, locking m for its first delivery as l says (Invisible, delivery
	// count 1) when l.o holds the device and none of its other messages is Enqueued (locked):
	// a send whose device is ready for it is its device's delivery round (round.go).
	enqueueFirst(m *msgRow, maxPending int, l firstLock) (seq int64, pending int, found, locked bool, err error)
	// txStatus is the outcome of the PostgreSQL transaction xid (msgRow.xid): txCommitted,
	// txAborted, txInProgress or txFuture.
	txStatus(xid int64) (string, error)
	lockNextOwned(deviceID string, o owner, limit int, until time.Time, prefix string) ([]msgRow, error)
	settleLocked(deviceID, token string, now time.Time, o owner, outcome iothub.FeedbackStatus, reason string) (msgRow, bool, error)
	lockExpired(now time.Time, limit int) ([]msgRow, error)
	ttlExpired(now time.Time, limit int) ([]msgRow, error) // Enqueued only
	invisible() ([]msgRow, error)
	nextMessageDeadline() (time.Time, error) // earliest lock expiry or Enqueued expiry; zero if none
	pruneSettled(before time.Time) (int64, error)

	// feedback
	insertRecord(r iothub.FeedbackRecord, createdAt time.Time) error
	unbatched() (count int, oldest time.Time, err error)
	formBatch(b batchRow, limit int) (int, error) // assigns up to limit unbatched records to a new batch b
	maxBatchID() (int64, error)
	availableBatch(now time.Time) (batchRow, bool, error)
	batchByToken(token string) (batchRow, bool, error)
	batchRecords(id int64) ([]iothub.FeedbackRecord, error)
	lockBatch(id int64, token string, until time.Time, deliveryCount int) error
	unlockBatch(id int64) error
	deleteBatch(id int64) error
	lockExpiredBatches(now time.Time) ([]batchRow, error)
	expiredBatches(now time.Time) ([]int64, error)
	nextBatchDeadline() (time.Time, error)
	unlockAllBatches() (int64, error)
	pendingFeedback() (int, error)

	// cluster (shared stores; store_sql_cluster.go)
	claimDevice(deviceID, node string, now time.Time) (epoch int64, err error)
	deviceOwner(deviceID string) (node string, epoch int64, found bool, err error)
	releaseDevice(deviceID, node string, epoch int64) error
	fenceDevice(deviceID string) error // no node holds it, and every earlier epoch is stale
	sessionsOf(node string) (map[string]int64, error)
	registerNode(n nodeRow) error
	heartbeat(node string, now time.Time, devices int) (known bool, err error)
	deadNodes(before time.Time) ([]string, error)
	deleteNode(node string) error
	nodes() ([]nodeRow, error)
	enqueuedDevices() ([]string, error)
	setNodeAPI(node, url, host string) error
	deviceRoute(deviceID string) (r nodeRoute, found bool, err error) // the live or dead node holding it

	connHistoryTx
}

// nodeRow is one node of a cluster as stored.
type nodeRow struct {
	ID        string
	Started   time.Time
	Heartbeat time.Time
	Devices   int
	Version   string
	APIURL    string // where its service API is reached ("" when it advertises none)
	APIHost   string // the host name SAS tokens for that API are signed for
}

type logger interface {
	Error(msg string, args ...any)
}

// migrations[i] takes the schema from version i to i+1; PRAGMA user_version holds the version, so
// the schema is len(migrations) after Open. The SQL is kept to what PostgreSQL also
// runs (BIGINT/TEXT/BYTEA-compatible BLOB aside; see doc.go).
var migrations = []string{
	`CREATE TABLE policies (
		name          TEXT PRIMARY KEY,
		primary_key   TEXT NOT NULL,
		secondary_key TEXT NOT NULL,
		rights        TEXT NOT NULL
	);
	CREATE TABLE devices (
		device_id     TEXT PRIMARY KEY,
		generation_id TEXT NOT NULL,
		etag          TEXT NOT NULL,
		status        TEXT NOT NULL,
		status_reason TEXT NOT NULL,
		primary_key   TEXT NOT NULL,
		secondary_key TEXT NOT NULL,
		last_seq      BIGINT NOT NULL,
		updated_at    BIGINT NOT NULL
	);
	CREATE TABLE messages (
		device_id        TEXT NOT NULL,
		seq              BIGINT NOT NULL,
		message_id       TEXT NOT NULL,
		correlation_id   TEXT NOT NULL,
		user_id          TEXT NOT NULL,
		ack              TEXT NOT NULL,
		content_type     TEXT NOT NULL,
		content_encoding TEXT NOT NULL,
		properties       TEXT NOT NULL,
		body             BLOB,
		enqueued_at      BIGINT NOT NULL,
		expires_at       BIGINT NOT NULL,
		explicit_expiry  INTEGER NOT NULL,
		state            TEXT NOT NULL,
		delivery_count   INTEGER NOT NULL,
		lock_token       TEXT,
		locked_until     BIGINT,
		PRIMARY KEY (device_id, seq)
	);
	CREATE UNIQUE INDEX messages_lock_token ON messages (lock_token);
	CREATE INDEX messages_state_lock ON messages (state, locked_until);
	CREATE INDEX messages_state_expiry ON messages (state, expires_at);
	CREATE INDEX messages_message_id ON messages (device_id, message_id);
	CREATE TABLE settled (
		device_id      TEXT NOT NULL,
		seq            BIGINT NOT NULL,
		message_id     TEXT NOT NULL,
		correlation_id TEXT NOT NULL,
		ack            TEXT NOT NULL,
		properties     TEXT NOT NULL,
		enqueued_at    BIGINT NOT NULL,
		expires_at     BIGINT NOT NULL,
		delivery_count INTEGER NOT NULL,
		state          TEXT NOT NULL,
		outcome        TEXT NOT NULL,
		reason         TEXT NOT NULL,
		settled_at     BIGINT NOT NULL,
		PRIMARY KEY (device_id, seq)
	);
	CREATE INDEX settled_message_id ON settled (device_id, message_id);
	CREATE INDEX settled_settled_at ON settled (settled_at);
	CREATE TABLE feedback_records (
		id                  INTEGER PRIMARY KEY,
		batch_id            BIGINT,
		device_id           TEXT NOT NULL,
		original_message_id TEXT NOT NULL,
		generation_id       TEXT NOT NULL,
		enqueued_at         BIGINT NOT NULL,
		status              TEXT NOT NULL,
		description         TEXT NOT NULL,
		reason              TEXT NOT NULL,
		delivery_count      INTEGER NOT NULL,
		correlation_id      TEXT NOT NULL,
		created_at          BIGINT NOT NULL
	);
	CREATE INDEX feedback_records_batch ON feedback_records (batch_id, id);
	CREATE INDEX feedback_records_device ON feedback_records (device_id);
	CREATE TABLE feedback_batches (
		id             BIGINT PRIMARY KEY,
		enqueued_at    BIGINT NOT NULL,
		expires_at     BIGINT NOT NULL,
		delivery_count INTEGER NOT NULL,
		lock_token     TEXT,
		locked_until   BIGINT
	);
	CREATE UNIQUE INDEX feedback_batches_lock_token ON feedback_batches (lock_token);
	CREATE INDEX feedback_batches_locked_until ON feedback_batches (locked_until);
	CREATE INDEX feedback_batches_expires_at ON feedback_batches (expires_at);`,
	// Clusters: which node holds each device's connection, with the fencing epoch every write
	// for the device is checked against, and the nodes' heartbeats.
	`CREATE TABLE device_sessions (
		device_id TEXT PRIMARY KEY,
		node_id   TEXT NOT NULL,
		epoch     BIGINT NOT NULL,
		since     BIGINT NOT NULL
	);
	CREATE INDEX device_sessions_node ON device_sessions (node_id);
	CREATE TABLE nodes (
		node_id   TEXT PRIMARY KEY,
		started   BIGINT NOT NULL,
		heartbeat BIGINT NOT NULL,
		devices   INTEGER NOT NULL,
		version   TEXT NOT NULL
	);`,
	// Connection history (connhistory.go): written coalesced, never per message.
	`CREATE TABLE device_connections (
		device_id        TEXT PRIMARY KEY,
		connected        INTEGER NOT NULL,
		state_updated_at BIGINT NOT NULL,
		last_activity_at BIGINT NOT NULL,
		flushed_at       BIGINT NOT NULL
	);`,
	// Device twins (store_twin.go): one JSON document per device generation.
	`CREATE TABLE twins (
		device_id     TEXT PRIMARY KEY,
		generation_id TEXT NOT NULL,
		doc           TEXT NOT NULL
	);`,
	// Clusters: where each node's service API is reached (route.go), so that a node can pass a
	// direct method to the node holding the device's session.
	`ALTER TABLE nodes ADD COLUMN api_url TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN api_host TEXT NOT NULL DEFAULT '';`,
	// Two indexes fewer for every message to maintain (an insert each, PostgreSQL's and SQLite's
	// largest cost per send): a settle finds its message by the primary key (a lock token ends in
	// the sequence number, lockSeq), and one index serves both sweeps, since an Enqueued message
	// has no lock (locked_until NULL): lock expiry is (Invisible, locked_until ≤ now), TTL expiry
	// (Enqueued, NULL, expires_at ≤ now).
	`DROP INDEX messages_lock_token;
	DROP INDEX messages_state_lock;
	DROP INDEX messages_state_expiry;
	CREATE INDEX messages_due ON messages (state, locked_until, expires_at);`,
}

// earliest returns the earlier of two times, a zero time meaning "none".
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

func marshalProps(p []iothub.AppProperty) (string, error) {
	if len(p) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(p)
	return string(b), err
}

func unmarshalProps(s string) ([]iothub.AppProperty, error) {
	if s == "" || s == "[]" {
		return nil, nil
	}
	var p []iothub.AppProperty
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return nil, fmt.Errorf("stored properties: %w", err)
	}
	return p, nil
}

func formatRights(rs []Permission) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

func parseRights(s string) []Permission {
	var out []Permission
	for _, r := range strings.Split(s, ",") {
		if r != "" {
			out = append(out, Permission(r))
		}
	}
	return out
}
