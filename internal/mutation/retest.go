package mutation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Options says which mutants to try and against what.
type Options struct {
	// ModuleDir is the module's root; go test runs there.
	ModuleDir string
	// Pkg is the mutated package, relative to ModuleDir (cloud/methods): the report's file
	// names are relative to it.
	Pkg string
	// Tests are the packages whose tests run against each mutant (./cloud/server).
	Tests []string
	// Run, when set, is go test's -run pattern.
	Run string
	// Timeout is how long one go test may take before its mutant counts as timed out; zero means
	// ten times the unmutated runs (at least 30 s more than them).
	Timeout time.Duration
	// Log, when set, gets a line per mutant.
	Log func(format string, args ...any)
}

// Retest runs every mutant of r that lived or was not covered against opts.Tests (one that was
// not covered against the package's own tests first: gremlins ran none on it) and sets its status
// from what go test did: killed when a test failed, lived when all passed, timed out when a run
// passed Timeout, not viable when it did not build. It first runs all those tests unmutated,
// which must pass, and finally recounts r. Nothing in the tree is written: each mutant is an
// overlay in a temporary directory.
func Retest(ctx context.Context, r *Report, opts Options) error {
	if len(opts.Tests) == 0 {
		return errors.New("retest: no test packages")
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tmp, err := os.MkdirTemp("", "c2d-mutation-")
	if err != nil {
		return fmt.Errorf("retest: %w", err)
	}
	defer os.RemoveAll(tmp)

	start := time.Now()
	if out, status := runTests(ctx, opts, "", 0, true); status != Lived {
		return fmt.Errorf("retest: the unmutated tests did not pass (%s):\n%s", status, tail(out))
	}
	base := time.Since(start)
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = max(10*base, base+30*time.Second)
	}
	logf("unmutated run %s; a mutant's run may take %s", base.Round(time.Millisecond), timeout.Round(time.Second))

	for fi := range r.Files {
		f := &r.Files[fi]
		path, err := filepath.Abs(filepath.Join(opts.ModuleDir, opts.Pkg, f.Filename))
		if err != nil {
			return fmt.Errorf("retest: %w", err)
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("retest: %w", err)
		}
		for mi := range f.Mutations {
			m := &f.Mutations[mi]
			if m.Status != Lived && m.Status != NotCovered {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			mutated, err := Apply(src, *m)
			if err != nil {
				return fmt.Errorf("retest %s: %w", filepath.Join(opts.Pkg, f.Filename), err)
			}
			overlay, err := writeOverlay(tmp, path, mutated)
			if err != nil {
				return err
			}
			was := m.Status
			t0 := time.Now()
			_, m.Status = runTests(ctx, opts, overlay, timeout, was == NotCovered)
			logf("%s %s:%d:%d %s → %s (%s)", m.Type, filepath.Join(opts.Pkg, f.Filename), m.Line, m.Column, was, m.Status, time.Since(t0).Round(time.Millisecond))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.RetestedWith = strings.Join(opts.Tests, " ")
	if opts.Run != "" {
		r.RetestedWith += " -run " + opts.Run
	}
	r.RetestedWith += "; ./" + opts.Pkg + " too for those not covered"
	r.ElapsedTime += time.Since(start).Seconds()
	r.Recount()
	return nil
}

func writeOverlay(dir, path string, mutated []byte) (string, error) {
	file := filepath.Join(dir, "mutant.go")
	if err := os.WriteFile(file, mutated, 0o600); err != nil {
		return "", fmt.Errorf("retest: %w", err)
	}
	b, err := json.Marshal(map[string]map[string]string{"Replace": {path: file}})
	if err != nil {
		return "", fmt.Errorf("retest: %w", err)
	}
	overlay := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlay, b, 0o600); err != nil {
		return "", fmt.Errorf("retest: %w", err)
	}
	return overlay, nil
}

// buildFailed matches go test's line for a package that did not build or set up.
var buildFailed = regexp.MustCompile(`(?m)^FAIL\s+\S+\s+\[(build|setup) failed\]$`)

// runTests says what a mutant's status would be from a run of its tests, Lived when every test
// passed: first, when own is set, the mutated package's own tests, whole (gremlins did not run
// them on a mutant it reports not covered), then opts.Tests with opts.Run.
func runTests(ctx context.Context, opts Options, overlay string, timeout time.Duration, own bool) ([]byte, string) {
	if own {
		if out, status := goTest(ctx, opts.ModuleDir, overlay, timeout, "", "./"+opts.Pkg); status != Lived {
			return out, status
		}
	}
	return goTest(ctx, opts.ModuleDir, overlay, timeout, opts.Run, opts.Tests...)
}

// goTest runs go test once in dir on pkgs, with the overlay when one is given.
func goTest(ctx context.Context, dir, overlay string, timeout time.Duration, run string, pkgs ...string) ([]byte, string) {
	args := []string{"test", "-count=1", "-failfast"}
	if overlay != "" {
		args = append(args, "-overlay", overlay)
	}
	if timeout > 0 {
		// go test's own -timeout panics the test binary, which names the test that hung; the
		// context is the backstop for a build or a child that outlives it.
		args = append(args, "-timeout", timeout.String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout+time.Minute)
		defer cancel()
	}
	if run != "" {
		args = append(args, "-run", run)
	}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	switch {
	case err == nil:
		return out.Bytes(), Lived
	case ctx.Err() != nil, bytes.Contains(out.Bytes(), []byte("panic: test timed out after")):
		return out.Bytes(), TimedOut
	case buildFailed.Match(out.Bytes()):
		return out.Bytes(), NotViable
	default:
		return out.Bytes(), Killed
	}
}

func tail(b []byte) string {
	const n = 4000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
