package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/version"
)

// Environment variables c2d reads; a flag given on the command line wins over its variable.
const (
	EnvConnectionString = "C2D_CONNECTION_STRING"
	EnvEndpoint         = "C2D_ENDPOINT"
	EnvCAFile           = "C2D_CA_FILE"
	EnvOutput           = "C2D_OUTPUT"
)

// Env is the world c2d runs in: main passes the process's, tests may pass their own.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// StderrIsTerminal turns on progress display (the send --wait spinner) and colour-free
	// interactive hints; on a pipe c2d prints nothing but results and errors.
	StderrIsTerminal bool
}

// app is one invocation's state: resolved global flags and the lazily built client.
type app struct {
	env Env

	connStr  string
	endpoint string
	caFile   string
	output   string // "text" or "json"
	timeout  time.Duration
	verbose  bool // --verbose: each HTTP request and its answer on stderr

	started bool    // a command's RunE is running: earlier errors are usage errors
	subj    subject // what the running command is about, for error advice
	hub     hubClient
	cs      iothub.ServiceConnectionString // parsed by client()
}

func (a *app) json() bool { return a.output == "json" }

// Main runs c2d with args (without the program name) and returns the process exit code. Results go
// to env.Stdout; errors (as text, or {"error","code","exitCode"} JSON with -o json) to env.Stderr.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	a := &app{env: env}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var oe *outcomeError
	if errors.As(err, &oe) {
		return oe.exit // the outcome was printed as the command's result
	}
	if !a.started {
		var ce *cliError
		if !errors.As(err, &ce) {
			err = &cliError{exit: ExitUsage, code: "Usage", err: err,
				msg: err.Error() + "; see `c2d --help` or `c2d COMMAND --help`"}
		}
	}
	ce := classify(err, a.subj)
	if a.output == "" {
		a.output = outputFromArgs(args, env.Getenv)
	}
	a.printError(ce)
	return ce.exit
}

// outputFromArgs finds -o/--output when flag parsing failed before it was read, so even a usage
// error honours -o json.
func outputFromArgs(args []string, getenv func(string) string) string {
	out := getenv(EnvOutput)
scan:
	for i, s := range args {
		switch {
		case s == "--":
			break scan
		case (s == "-o" || s == "--output") && i+1 < len(args):
			out = args[i+1]
		case strings.HasPrefix(s, "--output="):
			out = strings.TrimPrefix(s, "--output=")
		case strings.HasPrefix(s, "-o") && len(s) > 2 && !strings.HasPrefix(s, "--"):
			out = strings.TrimPrefix(strings.TrimPrefix(s, "-o"), "=")
		}
	}
	o, err := parseOutput(out)
	if err != nil {
		return "text"
	}
	return o
}

// errorJSON is the stable JSON form of an error on stderr.
type errorJSON struct {
	Error    string `json:"error"`
	Code     string `json:"code"`
	ExitCode int    `json:"exitCode"`
	DeviceID string `json:"deviceId,omitempty"`
	MsgID    string `json:"messageId,omitempty"`
}

func (a *app) printError(ce *cliError) {
	if a.json() {
		b, _ := json.Marshal(errorJSON{Error: ce.msg, Code: ce.code, ExitCode: ce.exit, DeviceID: a.subj.device, MsgID: a.subj.message})
		fmt.Fprintf(a.env.Stderr, "%s\n", b)
		return
	}
	fmt.Fprintf(a.env.Stderr, "c2d: %s\n", ce.msg)
}

// Permissions the commands need, with the built-in policies that grant them (for error advice).
const (
	needRegistryRead   = "RegistryRead"
	needRegistryWrite  = "RegistryWrite"
	needServiceConnect = "ServiceConnect"
)

var policiesWith = map[string]string{
	needRegistryRead:   "policies 'registryRead', 'registryReadWrite' or 'iothubowner'",
	needRegistryWrite:  "policies 'registryReadWrite' or 'iothubowner'",
	needServiceConnect: "policies 'service' or 'iothubowner'",
}

// about records what the running command is about before it talks to the hub.
func (a *app) about(device, message, needs string) {
	a.subj.device, a.subj.message, a.subj.needs = device, message, needs
	a.subj.policies = policiesWith[needs]
}

const rootLong = `c2d sends commands to boards through a c2d hub and tells you whether each one was carried out.

It speaks the hub's service API with a shared access policy's connection string, like Azure IoT
Hub's tools: get one on the hub's machine with

  c2d-hub connection-string --data /var/lib/c2d-hub --policy iothubowner

Credentials and hub address (a flag wins over its environment variable):
  --connection-string, C2D_CONNECTION_STRING  policy connection string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...)
  --endpoint, C2D_ENDPOINT                    the hub's API address when it is not https://{HostName}
                                              (e.g. https://hub.local:8443 or http://127.0.0.1:8080)
  --ca-file, C2D_CA_FILE                      CA certificate of a self-hosted hub (DATA/tls/ca.pem)

Results go to stdout; progress and errors to stderr. Add -o json anywhere for stable JSON.
Secrets are never printed unless a command exists to print them (device connection-string) or you
ask (--show-keys).

Exit codes:
` // exit codes appended at build time

func (a *app) rootCommand() *cobra.Command {
	root := group(&cobra.Command{
		Use:           "c2d",
		Short:         "Send commands to devices through a c2d hub and see whether they were carried out",
		Long:          rootLong + exitCodeTable(),
		Version:       version.String("c2d"),
		SilenceErrors: true,
		SilenceUsage:  true,
		Example: `  export C2D_CONNECTION_STRING="$(c2d-hub connection-string --data ./hub-data)"
  export C2D_ENDPOINT=http://127.0.0.1:8080
  c2d device create pump-7
  c2d device connection-string pump-7      # put this on the board
  c2d send pump-7 --props 'target=relay1;action=pulse;duration=2s' --wait 30s
  echo "exit $?"                           # 0 done, 3 rejected (reason printed), 7 no answer yet...`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.resolveGlobals(cmd)
		},
	})
	root.SetVersionTemplate("{{.Version}}\n")
	f := root.PersistentFlags()
	f.StringVar(&a.connStr, "connection-string", "", "policy connection string (default $"+EnvConnectionString+")")
	f.StringVar(&a.endpoint, "endpoint", "", "hub API address, e.g. https://hub.local:8443 (default $"+EnvEndpoint+", else https://{HostName})")
	f.StringVar(&a.caFile, "ca-file", "", "PEM CA certificate to trust for the hub (default $"+EnvCAFile+")")
	f.StringVarP(&a.output, "output", "o", "", "output format: text or json (default $"+EnvOutput+", else text)")
	f.DurationVar(&a.timeout, "timeout", 30*time.Second, "time limit for each request to the hub (not for --wait/--follow)")
	f.BoolVar(&a.verbose, "verbose", false, "print each HTTP request to the hub and its answer on stderr (never the token)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.MarkPersistentFlagFilename("ca-file", "pem", "crt")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%s; see `%s --help`", flagError(err), c.CommandPath())
	})

	root.AddCommand(a.deviceCommand(), a.sendCommand(), a.feedbackCommand(), a.queueCommand(), a.hubCommand(), a.eventsCommand(), a.policyCommand(),
		a.invokeCommand(), a.stateCommand(), a.twinCommand())
	a.markStart(root)
	return root
}

// markStart wraps every command's RunE so an error returned before it ran (cobra's own checks:
// arguments, flags, flag groups) is known to be a usage error.
func (a *app) markStart(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			a.started = true
			return run(c, args)
		}
	}
	for _, sub := range cmd.Commands() {
		a.markStart(sub)
	}
}

// resolveGlobals applies environment defaults and validates the global flags once per run.
func (a *app) resolveGlobals(cmd *cobra.Command) error {
	fl := cmd.Flags()
	if !fl.Changed("output") {
		a.output = a.env.Getenv(EnvOutput)
	}
	o, err := parseOutput(a.output)
	if err != nil {
		a.output = "text"
		return usageErrorf("%v", err)
	}
	a.output = o
	if !fl.Changed("connection-string") {
		a.connStr = a.env.Getenv(EnvConnectionString)
	}
	if !fl.Changed("endpoint") {
		a.endpoint = a.env.Getenv(EnvEndpoint)
	}
	if !fl.Changed("ca-file") {
		a.caFile = a.env.Getenv(EnvCAFile)
	}
	if a.timeout <= 0 {
		return usageErrorf("--timeout %s must be positive", a.timeout)
	}
	return nil
}

// client builds the hub client from the resolved credentials (once).
func (a *app) client() (hubClient, error) {
	if a.hub != nil {
		return a.hub, nil
	}
	if strings.TrimSpace(a.connStr) == "" {
		return nil, &cliError{exit: ExitUsage, code: "NoCredentials",
			msg: "no connection string: pass --connection-string or set " + EnvConnectionString +
				" (on the hub's machine: `c2d-hub connection-string --data DIR --policy iothubowner`)"}
	}
	cs, err := iothub.ParseServiceConnectionString(strings.TrimSpace(a.connStr))
	if dcs, derr := iothub.ParseDeviceConnectionString(strings.TrimSpace(a.connStr)); err != nil && derr == nil {
		return nil, &cliError{exit: ExitUsage, code: "BadConnectionString", err: err,
			msg: fmt.Sprintf("the connection string in --connection-string / %s is device %q's (it has DeviceId=): that one belongs on the board; c2d needs a shared access policy's connection string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...): on the hub's machine run `c2d-hub connection-string --data DIR --policy iothubowner`",
				EnvConnectionString, dcs.DeviceID)}
	}
	if err != nil {
		return nil, &cliError{exit: ExitUsage, code: "BadConnectionString", err: err,
			msg: fmt.Sprintf("the policy connection string (--connection-string / %s) is not usable: %v; it looks like HostName=...;SharedAccessKeyName=...;SharedAccessKey=...", EnvConnectionString, err)}
	}
	a.subj.policy = cs.SharedAccessKeyName
	a.cs = cs
	endpoint := strings.TrimRight(strings.TrimSpace(a.endpoint), "/")
	if endpoint != "" && !strings.HasPrefix(endpoint, "http://") && !strings.HasPrefix(endpoint, "https://") {
		return nil, usageErrorf("--endpoint %q: want a URL such as https://%s:8443 or http://127.0.0.1:8080", endpoint, cs.HostName)
	}
	a.subj.endpoint = endpoint
	if endpoint == "" {
		a.subj.endpoint = "https://" + cs.HostName
	}
	var roots *x509.CertPool
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, usageErrorf("--ca-file: %v", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--ca-file %s: no PEM certificate in it (want the hub's CA, DATA/tls/ca.pem)", a.caFile)
		}
	}
	var trace io.Writer
	if a.verbose {
		trace = a.env.Stderr
	}
	c, err := newAPIClient(cs, endpoint, roots, trace)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	a.hub = c
	return c, nil
}

// call runs one request with the --timeout limit.
func (a *app) call(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// deviceRunE is the RunE of a command on one device (its only argument): the id checked locally
// (a typo fails before any request), what errors should name, the hub client and a context bounded
// by --timeout, then run.
func (a *app) deviceRunE(needs string, run func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		id := args[0]
		if err := deviceArg(id); err != nil {
			return err
		}
		a.about(id, "", needs)
		c, err := a.client()
		if err != nil {
			return err
		}
		ctx, cancel := a.call(cmd)
		defer cancel()
		return run(cmd, ctx, c, id)
	}
}

// deviceArg validates the device id argument locally so a typo fails before any request.
func deviceArg(id string) error {
	if err := iothub.ValidateDeviceID(id); err != nil {
		return usageErrorf("%v", err)
	}
	return nil
}

// args returns a positional-argument check that fails as a usage error naming what is expected.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("%s takes %d argument(s) (%s), got %d; see `%s --help`",
				cmd.CommandPath(), len(names), strings.Join(names, " "), len(args), cmd.CommandPath())
		}
		return nil
	}
}

// group is a command that only holds subcommands: bare, it prints its help; with an unknown
// subcommand it fails as a usage error.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			hint := ""
			if sug := c.SuggestionsFor(args[0]); len(sug) > 0 {
				hint = fmt.Sprintf(" (did you mean %q?)", sug[0])
			}
			return usageErrorf("unknown command %q for %q%s; see `%s --help`", args[0], c.CommandPath(), hint, c.CommandPath())
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, args []string) error { return c.Help() }
	return cmd
}

// completeDevices offers registered device ids for the first argument when credentials are set.
func (a *app) completeDevices(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if a.resolveGlobals(cmd) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
	defer cancel()
	devs, err := c.ListDevices(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []string
	for _, d := range devs {
		if strings.HasPrefix(d.DeviceID, toComplete) {
			ids = append(ids, d.DeviceID)
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
