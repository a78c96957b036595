// Package apiclient is the typed Go client of c2d-hub's HTTP service API (docs/api.md), used by the
// c2d CLI and the tests. It signs every request with a policy SAS token made from a service
// connection string, returns the hub's refusals as *iothub.Error (errors.As) and copes with
// long-polls: a wait of up to a minute is never cut short by a client-wide timeout.
package apiclient
