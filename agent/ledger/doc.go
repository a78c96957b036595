// Package ledger is the agent's executed-id log: the durable memory that makes a redelivered
// message a no-op. For each message id it records, with fsync, that execution started (before any
// pin moves) and how it ended (before the message is acknowledged), so every crash window has a
// defined outcome:
//
//   - crash before "started": nothing moved; the redelivery runs normally.
//   - crash after "started", before "done": the pins may have moved and start-up drove them back to
//     safe state; the redelivery is refused with a reason instead of being run twice.
//   - crash after "done", before the acknowledgement: the redelivery is settled again with the
//     recorded outcome, moving nothing.
//
// The log is an append-only file of checksummed JSON lines, bounded to the most recent N ids and
// compacted by rewriting it atomically. A torn or corrupt line (power loss mid-write) is dropped
// with a warning, never fatal: losing the memory of one message is better than a board that will
// not start.
package ledger
