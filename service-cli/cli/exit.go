package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Exit codes of c2d: the one place they are defined. docs/cli.md and `c2d send --help` list them;
// scripts depend on them, so a code never changes meaning.
const (
	ExitOK                    = 0   // the command did what it was asked; send --wait: the device completed the message
	ExitError                 = 1   // any other failure: the hub refused the request (queue full, conflict...), server error
	ExitUsage                 = 2   // bad flags or arguments, missing or malformed credentials: nothing was sent
	ExitRejected              = 3   // send --wait: the device rejected the message (the reason is printed)
	ExitExpired               = 4   // send --wait: the message expired before the device settled it
	ExitDeliveryCountExceeded = 5   // send --wait: the device never settled it within the hub's delivery count
	ExitPurged                = 6   // send --wait: the queue was purged while the message was in it
	ExitTimeout               = 7   // send --wait: no outcome within the wait timeout; the message is still queued
	ExitUnauthorized          = 8   // the hub refused the credentials, or the policy lacks the right the command needs
	ExitNotFound              = 9   // the device or message does not exist
	ExitUnreachable           = 10  // the hub could not be reached (connection refused, DNS, TLS trust, timeout)
	ExitOffline               = 11  // invoke, state: the device is not connected (methods are never queued)
	ExitDeviceError           = 12  // invoke: the device answered with a status other than 2xx
	ExitInterrupted           = 130 // interrupted by SIGINT/SIGTERM (128+2, the shell's convention)
)

// exitCodes is the documented table, in order, for help text and docs.
var exitCodes = []struct {
	Code int
	Name string
	Doc  string
}{
	{ExitOK, "OK", "success; for send --wait: the device completed the message (statusCode Success)"},
	{ExitError, "Error", "the hub refused the request (e.g. queue full) or failed"},
	{ExitUsage, "Usage", "bad flags or arguments, missing or malformed credentials; nothing was sent"},
	{ExitRejected, "Rejected", "send --wait: the device rejected the message (reason printed)"},
	{ExitExpired, "Expired", "send --wait: the message expired before the device settled it"},
	{ExitDeliveryCountExceeded, "DeliveryCountExceeded", "send --wait: delivered too often without being settled"},
	{ExitPurged, "Purged", "send --wait: the device's queue was purged"},
	{ExitTimeout, "Timeout", "send --wait: no outcome within the timeout; the message stays queued; invoke: no answer in time"},
	{ExitUnauthorized, "Unauthorized", "credentials refused, or the policy lacks the needed permission"},
	{ExitNotFound, "NotFound", "the device or message does not exist"},
	{ExitUnreachable, "Unreachable", "cannot connect to the hub (address, TLS trust, timeout)"},
	{ExitOffline, "Offline", "invoke, state: the device is not connected"},
	{ExitDeviceError, "DeviceError", "invoke: the device answered with a non-2xx status (printed)"},
	{ExitInterrupted, "Interrupted", "interrupted (Ctrl-C / SIGTERM)"},
}

// exitCodeTable renders exitCodes for help text.
func exitCodeTable() string {
	s := ""
	for _, e := range exitCodes {
		s += fmt.Sprintf("  %3d  %-22s %s\n", e.Code, e.Name, e.Doc)
	}
	return s
}

// OutcomeExitCode maps a message's final feedback status to the exit code of `send --wait`.
func OutcomeExitCode(s iothub.FeedbackStatus) int {
	switch s {
	case iothub.StatusSuccess:
		return ExitOK
	case iothub.StatusRejected:
		return ExitRejected
	case iothub.StatusExpired:
		return ExitExpired
	case iothub.StatusDeliveryCountExceeded:
		return ExitDeliveryCountExceeded
	case iothub.StatusPurged:
		return ExitPurged
	}
	return ExitError
}

// cliError is an error with its exit code and a stable name for JSON output ({"error","code"}).
type cliError struct {
	exit int
	code string // e.g. "Usage", "DeviceNotFound", "Unreachable"
	msg  string // what failed and what to do; complete sentence(s)
	err  error  // cause, for errors.Is/As
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// usageErrorf is a command-line mistake: exit 2.
func usageErrorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &cliError{exit: ExitUsage, code: "Usage", msg: err.Error(), err: err}
}

// outcomeError carries a non-success outcome of send --wait; the result itself was already printed.
type outcomeError struct {
	exit int
	code string
}

func (e *outcomeError) Error() string { return e.code }

// subject names what a request was about, for error messages and hints.
type subject struct {
	device   string // device id, if any
	message  string // message id, if any
	needs    string // the policy permission the command needs, e.g. "ServiceConnect"
	policies string // policies that have it, e.g. "'service' or 'iothubowner'"
	endpoint string // where we talked to
	policy   string // the policy name of the connection string in use
}

// classify turns any error of a command into a cliError with an exit code and advice. Errors that
// are already classified pass through.
func classify(err error, s subject) *cliError {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, context.Canceled) {
		return &cliError{exit: ExitInterrupted, code: "Interrupted", msg: "interrupted", err: err}
	}
	var he *iothub.Error
	if errors.As(err, &he) {
		return classifyHub(he, s)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &cliError{exit: ExitUnreachable, code: "Unreachable", err: err,
			msg: fmt.Sprintf("the hub at %s did not answer in time (%v); check that c2d-hub is running and reachable, or raise --timeout", s.endpoint, err)}
	}
	if tlsTrustError(err) {
		return &cliError{exit: ExitUnreachable, code: "Unreachable", err: err,
			msg: fmt.Sprintf("cannot trust the hub's TLS certificate at %s: %v; for a self-hosted hub pass --ca-file DATA/tls/ca.pem (or set C2D_CA_FILE)", s.endpoint, err)}
	}
	var ue *url.Error
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &oe) {
		return &cliError{exit: ExitUnreachable, code: "Unreachable", err: err,
			msg: fmt.Sprintf("cannot reach the hub at %s: %v; check --endpoint / C2D_ENDPOINT and that c2d-hub is running", s.endpoint, err)}
	}
	return &cliError{exit: ExitError, code: "Error", msg: err.Error(), err: err}
}

func tlsTrustError(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &cv) || errors.As(err, &rh)
}

func classifyHub(he *iothub.Error, s subject) *cliError {
	ce := &cliError{exit: ExitError, code: he.Code.Name(), err: he}
	if ce.code == "" {
		ce.code = fmt.Sprintf("Error%d", int(he.Code))
	}
	detail := he.Detail
	if detail == "" {
		detail = he.Code.Name()
	}
	switch he.Code {
	case iothub.CodeIotHubUnauthorizedAccess:
		ce.exit = ExitUnauthorized
		ce.msg = unauthorizedAdvice(detail, s)
	case iothub.CodeDeviceNotFound:
		ce.exit = ExitNotFound
		ce.msg = mention(detail, s.device, "device %q not found") + "; list the registered devices with `c2d device list`"
	case iothub.CodeDeviceMessageNotFound:
		ce.exit = ExitNotFound
		ce.msg = fmt.Sprintf("message %q of device %q not found: %s; see what is queued with `c2d queue show %s`", s.message, s.device, detail, s.device)
	case iothub.CodeDeviceMaximumQueueDepthExceeded:
		// The hub's detail ends with its own generic advice; keep only the facts before it.
		facts, _, _ := strings.Cut(detail, ": ")
		ce.msg = mention(facts, s.device, "device %q's queue is full") +
			fmt.Sprintf("; the device is not taking its messages (is it connected? `c2d device show %s`): wait, or empty its queue with `c2d queue purge %s`", s.device, s.device)
	case iothub.CodeDeviceAlreadyExists:
		ce.msg = fmt.Sprintf("device %q already exists, so nothing was changed; see it with `c2d device show %s`, change it with `c2d device update %s`", s.device, s.device, s.device)
	case iothub.CodeArgumentInvalid, iothub.CodeMessageTooLarge:
		ce.exit = ExitUsage
		ce.msg = fmt.Sprintf("the hub refused the request: %s", detail)
	case iothub.CodePreconditionFailed:
		ce.msg = fmt.Sprintf("device %q changed while this command updated it: %s; run the command again", s.device, detail)
	case iothub.CodeThrottlingException, iothub.CodeIotHubQuotaExceeded:
		ce.msg = fmt.Sprintf("the hub is throttling requests: %s; try again shortly", detail)
	default:
		ce.msg = fmt.Sprintf("the hub failed the request (%d %s): %s", int(he.Code), he.Code.Name(), detail)
	}
	return ce
}

// mention returns the hub's detail when it names the device, else the detail prefixed with what
// (formatted with the device id), so every message names the device exactly once.
func mention(detail, device, what string) string {
	if device == "" || strings.Contains(detail, device) {
		return detail
	}
	return fmt.Sprintf(what, device) + ": " + detail
}

// unauthorizedAdvice says why the hub refused the credentials and the one next step that fixes it:
// a wrong key and a missing permission need different fixes, so only the relevant one is named.
func unauthorizedAdvice(detail string, s subject) string {
	policy := s.policy
	if policy == "" {
		policy = "NAME"
	}
	fresh := fmt.Sprintf("get a current connection string on the hub's machine with `c2d-hub connection-string --data DIR --policy %s` and pass it with --connection-string or %s", policy, EnvConnectionString)
	switch {
	case strings.Contains(detail, "signature does not match"):
		return fmt.Sprintf("unauthorized: the hub does not accept the key in the connection string of policy %q (wrong, or rotated since it was printed); %s", s.policy, fresh)
	case strings.Contains(detail, " lacks "):
		// c2d-hub's detail names the right and the policies that have it; add them only when the
		// detail does not, then how to get a connection string of one.
		msg := "unauthorized: " + detail
		if !strings.Contains(detail, "; use ") && s.needs != "" {
			msg += fmt.Sprintf("; this command needs %s (%s)", s.needs, s.policies)
		}
		return msg + ": get a connection string of one of them on the hub's machine with `c2d-hub connection-string --data DIR --policy NAME`"
	case strings.Contains(detail, "expired"):
		return "unauthorized: " + detail + "; check this machine's clock (`timedatectl`): c2d signs a fresh token for every run"
	case strings.Contains(detail, "unknown shared access policy"):
		return "unauthorized: " + detail + "; the built-in policies are iothubowner, service, registryRead and registryReadWrite: `c2d-hub connection-string --data DIR --policy NAME`"
	}
	msg := "unauthorized: " + detail
	if s.policy != "" && !strings.Contains(detail, s.policy) {
		msg += fmt.Sprintf(" (connection string policy %q)", s.policy)
	}
	return msg + "; " + fresh
}
