package cli

import (
	"context"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// hubClient is what the commands need from the hub's service API: the methods of
// *apiclient.Client (docs/api.md), behind an interface so each command states its dependency and the
// adapter (client_apiclient.go) is the one place that knows the client's concrete types.
type hubClient interface {
	CreateDevice(ctx context.Context, id, primary, secondary string) (iothub.Device, error)
	GetDevice(ctx context.Context, id string) (iothub.Device, error)
	ListDevices(ctx context.Context) ([]iothub.Device, error)
	DeleteDevice(ctx context.Context, id string) error
	SetDeviceStatus(ctx context.Context, id string, status iothub.DeviceStatus) (iothub.Device, error)
	PutDevice(ctx context.Context, dev iothub.Device, ifMatch string) (iothub.Device, error)
	Send(ctx context.Context, id string, req iothub.SendRequest) (iothub.SendResult, error)
	Queue(ctx context.Context, id string) ([]iothub.MessageStatus, error)
	MessageStatus(ctx context.Context, id, mid string, wait time.Duration) (iothub.MessageStatus, error)
	Purge(ctx context.Context, id string) (iothub.PurgeResult, error)
	ReceiveFeedback(ctx context.Context, wait time.Duration) (*iothub.FeedbackBatch, error)
	CompleteFeedback(ctx context.Context, lockToken string) error
	AbandonFeedback(ctx context.Context, lockToken string) error
	Status(ctx context.Context) (iothub.HubStatus, error)
	Events(ctx context.Context, after int64, deviceID string, wait time.Duration) (iothub.EventsAnswer, error)
	Health(ctx context.Context) (health, error)
	methodCall // methods.go
	twinCalls  // twin.go
}

// health is the unauthenticated /healthz answer.
type health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}
