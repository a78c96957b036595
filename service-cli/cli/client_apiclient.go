package cli

import (
	"context"
	"crypto/x509"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/version"
)

// apiClient adapts *apiclient.Client to hubClient.
type apiClient struct{ *apiclient.Client }

func newAPIClient(cs iothub.ServiceConnectionString, endpoint string, roots *x509.CertPool) (hubClient, error) {
	c, err := apiclient.New(cs, apiclient.Options{Endpoint: endpoint, RootCAs: roots,
		UserAgent: "c2d/" + version.Version})
	if err != nil {
		return nil, err
	}
	return apiClient{c}, nil
}

func (c apiClient) DeleteDevice(ctx context.Context, id string) error {
	return c.Client.DeleteDevice(ctx, id, "")
}

func (c apiClient) Health(ctx context.Context) (health, error) {
	h, err := c.Client.Health(ctx)
	return health{Status: h.Status, Version: h.Version}, err
}
