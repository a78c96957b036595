package hub

import "testing"

// onPostgresPrefix: newTestHub opens hubs of TestLifecycleOnPostgres's subtests on PostgreSQL.
const onPostgresPrefix = "TestLifecycleOnPostgres/"

// TestLifecycleOnPostgres runs the hub's lifecycle tests (written for, and run on, SQLite) again
// with the hub on PostgreSQL: every path of Azure's lifecycle, the timers and feedback batches
// behave the same on both stores. Tests of SQLite's own recovery at restart (one node: every
// lock is released at Open) are not in the list; a shared store keeps other nodes' locks.
func TestLifecycleOnPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Complete", TestCompleteProducesSuccessFeedback},
		{"Reject", TestRejectKeepsReason},
		{"Abandon", TestAbandonRedeliversWithIncrementedCount},
		{"LockExpiry", TestLockExpiryRedelivers},
		{"DeliveryCountExceeded", TestDeliveryCountExceeded},
		{"TTLOffline", TestTTLExpiresWhileOffline},
		{"ExplicitExpiry", TestExplicitExpiryIsDelivered},
		{"QueueFull", TestQueueFull},
		{"Purge", TestPurge},
		{"AckModes", TestAckModesProduceExactlyTheRightRecords},
		{"FeedbackBatching", TestFeedbackBatchingAndAbandon},
		{"FeedbackLockExpiry", TestFeedbackLockExpiryOffersBatchAgain},
		{"FIFOMaxInFlight", TestFIFOAndMaxInFlightWithOutOfOrderSettles},
		{"DetachReattach", TestDetachReturnsMessagesAndReattachRedelivers},
		{"DeliverError", TestDeliverErrorReturnsMessage},
		{"LockedTTL", TestLockedMessageWhoseTTLPassesCanStillComplete},
		{"SendValidation", TestSendValidation},
		{"ConcurrentSends", TestConcurrentSendsRespectQueueDepth},
		{"Events", TestEvents},
		{"Pruning", TestSettledOutcomesArePrunedAfterRetention},
		{"LockExpiryCounts", TestLockExpiryCountsTowardMaxDeliveryCount},
		{"Registry", TestRegistryKeysETagAndIfMatch},
		{"DeviceGone", TestDisableAndDeleteCallOnDeviceGone},
		{"Authenticate", TestAuthenticate},
	} {
		// Each subtest has its own database and directory; they mostly wait on timers and the
		// server, so they run side by side.
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}
