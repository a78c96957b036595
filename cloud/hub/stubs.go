package hub

// STUBS: replaced by the hub core implementation. Keep the signatures.

import (
	"context"
	"errors"

	"github.com/c2d-project/c2d/cloud/iothub"
)

var errTODO = errors.New("hub: not implemented yet")

// Defaults returns Azure's values for every zero field of c.
func (c Config) Defaults() Config { return c }

// Validate reports the first out-of-range field, named as in configs/hub.yaml.
func (c Config) Validate() error { return errTODO }

// Hub is the running core. All methods are safe for concurrent use.
type Hub struct{}

// Open opens (creating if needed) the store in dataDir (hub.db), runs crash recovery (every
// Invisible message whose connection is gone goes back to Enqueued; timers rearmed from stored
// deadlines), creates the built-in policies on first start, and starts the timers.
func Open(ctx context.Context, dataDir string, cfg Config, ev Events) (*Hub, error) {
	return nil, errTODO
}

// Close stops timers, waits for in-flight writes, closes the store.
func (h *Hub) Close() error { return errTODO }

// ---- service side (cloud/api) ----

// Send validates and durably enqueues; it returns only after the commit. ErrQueueFull, ErrDeviceNotFound,
// ErrInvalidArgument (wrapped in *iothub.Error) are its refusals.
func (h *Hub) Send(ctx context.Context, deviceID string, req iothub.SendRequest) (iothub.SendResult, error) {
	return iothub.SendResult{}, errTODO
}

// Queue lists a device's pending (Enqueued and Invisible) messages in FIFO order.
func (h *Hub) Queue(ctx context.Context, deviceID string) ([]iothub.MessageStatus, error) {
	return nil, errTODO
}

// MessageStatus returns one message's state (pending or settled; settled ones are kept for a while).
func (h *Hub) MessageStatus(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error) {
	return iothub.MessageStatus{}, errTODO
}

// WaitSettled blocks until the message reaches a terminal state or ctx ends; on ctx end it returns
// the current status and ctx.Err().
func (h *Hub) WaitSettled(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error) {
	return iothub.MessageStatus{}, errTODO
}

// Purge removes every pending message of a device (feedback Purged where ack asks for it… Azure
// sends none for purge; c2d records Purged as the message's outcome).
func (h *Hub) Purge(ctx context.Context, deviceID string) (iothub.PurgeResult, error) {
	return iothub.PurgeResult{}, errTODO
}

// ReceiveFeedback locks and returns the next feedback batch, blocking until one is ready or ctx ends
// (then nil, ctx.Err()).
func (h *Hub) ReceiveFeedback(ctx context.Context) (*iothub.FeedbackBatch, error) {
	return nil, errTODO
}

// CompleteFeedback deletes a received batch; ErrLockLost after its lock expired.
func (h *Hub) CompleteFeedback(ctx context.Context, lockToken string) error { return errTODO }

// AbandonFeedback makes a received batch available again.
func (h *Hub) AbandonFeedback(ctx context.Context, lockToken string) error { return errTODO }

// PutDevice creates (keys generated when empty) or updates a device; ifMatch "" or "*" skips the
// etag check. created tells which.
func (h *Hub) PutDevice(ctx context.Context, d iothub.Device, ifMatch string) (dev iothub.Device, created bool, err error) {
	return iothub.Device{}, false, errTODO
}

// GetDevice returns a device with live connection state and queue count.
func (h *Hub) GetDevice(ctx context.Context, id string) (iothub.Device, error) {
	return iothub.Device{}, errTODO
}

// DeleteDevice deletes a device, its queue and its pending feedback; a connected session is dropped
// by the broker (it learns through DeviceGone).
func (h *Hub) DeleteDevice(ctx context.Context, id, ifMatch string) error { return errTODO }

// ListDevices returns every device, sorted by id.
func (h *Hub) ListDevices(ctx context.Context) ([]iothub.Device, error) { return nil, errTODO }

// Policy returns a shared access policy by name.
func (h *Hub) Policy(name string) (Policy, bool) { return Policy{}, false }

// Status sums up the hub for GET /statistics/service.
func (h *Hub) Status(ctx context.Context) (iothub.HubStatus, error) {
	return iothub.HubStatus{}, errTODO
}

// ---- device side (cloud/broker) ----

// Authenticate checks a CONNECT: client id vs username, a SAS token signed by the device's
// primary/secondary key or by a policy with DeviceConnect, expiry, and that the device is enabled.
// Errors wrap ErrUnauthorized / ErrDeviceDisabled / iothub.ErrToken* with the reason.
func (h *Hub) Authenticate(ctx context.Context, req AuthRequest) (AuthResult, error) {
	return AuthResult{}, errTODO
}

// Attach registers a subscribed connection and starts delivering its queue. A previous Conn of the
// same device is detached first.
func (h *Hub) Attach(c Conn) {}

// Detach unregisters a connection; its Invisible messages go back to Enqueued at once
// (the delivery count already counted them).
func (h *Hub) Detach(c Conn) {}

// Settle applies a device's disposition to the delivery identified by lockToken. ErrLockLost when
// the lock expired or the token is unknown.
func (h *Hub) Settle(ctx context.Context, deviceID, lockToken string, d iothub.Disposition, reason string) error {
	return errTODO
}

// DeviceGone is closed-over by the broker: it is called with a device id whenever that device is
// deleted or disabled, so its session is dropped. Set before Open returns traffic; nil is fine.
func (h *Hub) OnDeviceGone(fn func(deviceID string)) {}
