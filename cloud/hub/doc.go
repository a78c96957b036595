// Package hub is c2d-hub's core: the device registry and shared access policies, durable per-device
// cloud-to-device queues with Azure's lifecycle (Enqueued → Invisible → Completed / dead-lettered),
// delivery feedback batches, and the timers (lock expiry, TTL, feedback batching) that drive them.
//
// The durable store is the one source of truth. The hub knows nothing of MQTT: connected devices
// reach it through the small Conn interface, implemented by cloud/broker for the embedded
// mochi-mqtt broker (or, later, by a bridge to an external broker). The HTTP service API
// (cloud/api) calls the methods of *Hub.
//
// # Durability
//
// The store is SQLite (modernc.org/sqlite, pure Go) in DATA/hub.db, journal_mode=WAL with
// synchronous=FULL: a commit that returned has been fsync'd, so it survives kill -9 and power
// loss. Every acknowledgement the hub gives (Send's result, a Settle, a feedback completion)
// is given only after its commit. One writer goroutine owns all writes and group-commits: it takes
// every request waiting (up to 512), runs them in one transaction and commits once, so concurrent
// sends share one fsync. A request refused before it wrote needs nothing undone; when one fails
// after writing, the batch runs again with each request in its own SAVEPOINT, so the failing
// request undoes only its own writes.
// Reads use a separate pool of read-only connections. busy_timeout is 10 s. Statements are prepared
// once (parsing costs more than running them). hub.db is created 0600 (it holds keys), and
// DATA/hub.lock (flock) refuses a second hub on the same data directory; ReadPolicies reads the
// policies without opening the hub, for `c2d-hub connection-string` while the hub runs.
//
// The schema is versioned by PRAGMA user_version and migrated forward at Open; a database from a
// newer c2d-hub is refused. The SQL is kept to what PostgreSQL also runs, so the same schema can
// later serve several hubs: differences are the '?' placeholders (rebind to $n), BLOB (BYTEA),
// INTEGER PRIMARY KEY of feedback_records (an identity column) and the PRAGMAs. The queue logic
// sees the store only through the storeTx interface (store.go).
//
// Terminal transitions and their feedback records are written in the same transaction: a crash
// never loses a record and never makes two. Delivery counts are incremented durably before
// Conn.Deliver is called.
//
// # PostgreSQL and clusters
//
// Config.Store selects the store: SQLite in the data directory (default), or a PostgreSQL
// connection string (pgx, pure Go) that several hubs — the nodes of a cluster — share. Both stores
// run the same SQL (store_sql_*.go, '?' rebound to $n for PostgreSQL) through the same group
// commit; the dialect adds what several writers need: FOR UPDATE on rows a write goes on to
// change, FOR UPDATE SKIP LOCKED in sweeps (each deadline applied once for the cluster), retries
// of deadlocks and serialization failures, ErrStoreUnavailable for a server that is gone, and the
// database's clock. The migrations are SQLite's, translated (BLOB → BYTEA, INTEGER PRIMARY KEY →
// identity), applied under an advisory lock; c2d_schema holds the version. One conformance suite
// (store_conformance_test.go) and the lifecycle tests run on both stores.
//
// With a shared store (cluster.go) a node claims each device it attaches with a fencing epoch,
// tells the other nodes what changed through coalesced NOTIFYs sent outside the data transactions
// (with a 1 s poll as the safety net), heartbeats, and releases the devices of a node whose
// heartbeat stopped. At Open a shared store keeps the other nodes' locks (only this node's
// previous sessions are released). docs/cluster.md has the design and its failure cases.
//
// # Lifecycle (azure-c2d.md §4) and the choices made where Azure is silent
//
//   - Send validates (iothub.Message.Validate, ValidateDeviceID) and refuses with *iothub.Error
//     (errors.As) that also matches ErrInvalidArgument / ErrDeviceNotFound / ErrQueueFull
//     (errors.Is): CodeArgumentInvalid (detail names the field, e.g. expiryTimeUtc),
//     CodeMessageTooLarge, CodeDeviceNotFound, CodeDeviceMaximumQueueDepthExceeded. A send without
//     a message id gets a random UUID (c2d addition). Sequence numbers are per device, from 1.
//     An explicit expiry must lie within [min_ttl, max_ttl] from now (with a grace of
//     min(5 s, min_ttl/2) for transit); without one, default_ttl applies and $.exp is not sent.
//   - Queue depth counts Enqueued + Invisible messages.
//   - Delivery is FIFO by sequence number, at most max_in_flight outstanding deliveries per
//     connection; a settle (or a lock expiry) frees a slot and the next message is delivered.
//     Settles are accepted in any order. Every delivery counts toward max_delivery_count, lock
//     expiries included (the safe reading for devices that crash mid-message).
//   - Lock tokens are 22 characters of base64url (128 random bits, topic-safe), new for every
//     delivery. The hub always sets Message.LockToken in Deliver; the broker renders $c2d.lt only
//     for connections that opted into the extension. A stale or unknown token, or one whose lock
//     expired, is ErrLockLost (CodeDeviceMessageLockLost).
//   - complete → Completed (Success). reject → DeadLettered (Rejected), reason kept, cut to
//     iothub.MaxReasonLength bytes. abandon, lock expiry, Detach and a failed Deliver → Enqueued,
//     unless the message already had max_delivery_count deliveries (→ DeadLettered,
//     DeliveryCountExceeded) or its TTL passed (→ DeadLettered, Expired).
//   - TTL: Enqueued messages expire by timer whether or not the device is connected. A locked
//     (Invisible) message whose TTL passes is not taken from the device: a complete or reject
//     that arrives while the lock is valid wins; the expiry applies when it would go back to the
//     queue.
//   - Purge settles every pending message, Invisible ones included, as Purged; messages with
//     ack negative or full produce a Purged feedback record (Azure lists Purged among feedback
//     status codes but documents no feedback for purges; c2d tells the sender).
//   - A connection whose Deliver returned an error gets no more deliveries until the device
//     attaches again (the broker is expected to Detach it); the message goes back to the queue.
//   - Settled outcomes stay queryable (MessageStatus, WaitSettled) for settled_retention (24 h),
//     pruned once a minute (or every settled_retention/2 if shorter). With several messages of the same id, the newest answers.
//     WaitSettled wakes on the settling commit (a channel per waited message), it never polls.
//
// # Feedback
//
// Per iothub-ack (AckMode.Wants): positive → Success; negative → Expired, DeliveryCountExceeded,
// Rejected, Purged; full → all. Records carry Azure's six fields plus c2d's reason, deliveryCount
// and correlationId; enqueuedTimeUtc is, as in Azure, when the outcome happened (the settle, the
// expiry, the purge), not when the message was sent. They form batches of feedback_batch_size (64), or whatever is waiting once
// the oldest record waited feedback_interval: 1 s by default, short enough for interactive use
// (Azure: 15 s). A receiver that is already waiting (a long-polling GET, an AMQP feedback link
// with credit) does not wait for that window: when no batch is available, the records pending form
// one at once — on a single node in the commit of the settle that wrote the record, which locks
// it for the waiting receiver and hands it over (feedback_handoff.go). Under load the receiver is busy with the previous batch while records accumulate,
// so batches stay large without a timer. A batch is locked for feedback_lock_timeout when received; Complete deletes it,
// Abandon or lock expiry offers it again until feedback_max_delivery_count deliveries, after which
// it is dropped (logged); a batch not completed within feedback_ttl is dropped (logged).
//
// # Timers
//
// Every deadline (lock expiry, message expiry, feedback batching, feedback locks and TTL) is a
// column in the store. One timer goroutine sleeps until the earliest, applies everything due in one
// transaction and asks the store for the next; operations that create an earlier deadline wake it.
// So timers survive restarts: they are data.
//
// # Recovery at Open
//
// No connection survives a restart: every Invisible message goes back to Enqueued (delivery count
// kept; dead-lettered if it used its last delivery or expired), locked feedback batches are
// unlocked, and the first timer sweep, run before Open returns, applies whatever fell due while
// the hub was down.
//
// # Registry and authentication
//
// Devices get 32-byte random keys (base64) when none are given, a random generationId at creation
// and a new etag on every update; If-Match "" or "*" is unconditional, otherwise a mismatch is
// ErrPreconditionFailed (CodePreconditionFailed); quotes and W/ are ignored. On update, empty keys
// and an empty status keep the stored ones. Disabling or deleting a device stops deliveries to it
// and calls the OnDeviceGone callback, so the broker drops the session. Connection state and
// lastActivityTime are kept in memory (they reset at restart). The built-in policies iothubowner,
// service, registryRead, registryReadWrite and device get random keys on first start and persist.
//
// Authenticate accepts a SAS token for {host}/devices/{id} signed by the device's primary or
// secondary key, or (with skn) by a policy with DeviceConnect; the username's host must be
// Config.HostName (case-insensitive) and its device id the client id's. It returns the token's
// expiry, at which the broker disconnects the device, as Azure does.
//
// # Conn contract
//
// Deliver is called without locks that Settle needs (the broker may Settle from another
// goroutine at once) but under the attachment's delivery lock, which Detach takes: no Deliver
// reaches a Conn after Detach(c) returned. So Deliver must not block, and must not call Attach or
// Detach. Conn values are compared with ==: implement Conn with a pointer type.
package hub
