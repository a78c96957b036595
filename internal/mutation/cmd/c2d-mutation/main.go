// Command c2d-mutation runs the mutants a gremlins report says lived (or were not covered) again
// against the tests of other packages, and rewrites the report (package mutation). make mutation
// calls it for the packages in MUTATION_ALSO.
//
//	c2d-mutation -report bin/mutation/cloud-methods.json -pkg cloud/methods \
//	    -tests ./cloud/methods,./cloud/server -run 'Method|Forward'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/c2d-project/c2d/internal/mutation"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "c2d-mutation:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("c2d-mutation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	report := fs.String("report", "", "gremlins' JSON report to read (required)")
	out := fs.String("o", "", "where to write the report with the new statuses (default: over -report)")
	pkg := fs.String("pkg", "", "the mutated package, relative to -C, as gremlins was given it (required)")
	tests := fs.String("tests", "", "comma-separated test packages to run against each mutant (required)")
	runPattern := fs.String("run", "", "go test -run pattern")
	dir := fs.String("C", ".", "the module's root")
	timeout := fs.Duration("timeout", 0, "a mutant's run time-out (default: 10 × the unmutated run, at least 30 s more)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *report == "":
		return errors.New("-report: required")
	case *pkg == "":
		return errors.New("-pkg: required")
	case strings.TrimSpace(*tests) == "":
		return errors.New("-tests: required")
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		*out = *report
	}
	r, err := mutation.ReadReport(*report)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	alone := r.TestEfficacy // gremlins' figure, before the retest
	err = mutation.Retest(ctx, r, mutation.Options{
		ModuleDir: *dir,
		Pkg:       *pkg,
		Tests:     strings.Split(*tests, ","),
		Run:       *runPattern,
		Timeout:   *timeout,
		Log: func(format string, a ...any) {
			fmt.Fprintf(stdout, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		},
	})
	if err != nil {
		return err
	}
	if err := r.Write(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s with %s: killed %d, lived %d, not covered %d, not viable %d, timed out %d; efficacy %.2f %% (gremlins alone: %.2f %%)\n",
		*pkg, r.RetestedWith, r.MutantsKilled, r.MutantsLived, r.MutantsNotCovered, r.MutantsNotViable, r.Count(mutation.TimedOut), r.TestEfficacy, alone)
	return nil
}
