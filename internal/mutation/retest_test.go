package mutation

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The module in testdata/mod: package lib, whose own tests pin only Clamp inside its range and
// Inc, and package user, whose tests pin Clamp's edges, Sum and Kind. Nothing pins Twice or Half.
const modDir = "testdata/mod"

func libMutant(t *testing.T, typ, status, mark string) Mutation {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(modDir, "lib", "lib.go"))
	if err != nil {
		t.Fatal(err)
	}
	line, col := at(t, string(src), mark)
	return Mutation{Type: typ, Status: status, Line: line, Column: col}
}

func testModEnv(t *testing.T) {
	// The testdata module stands alone, whatever the caller's Go environment says.
	t.Setenv("GOWORK", "off")
	t.Setenv("GOFLAGS", "")
}

func TestRetestRunsSurvivorsAgainstOtherPackagesTests(t *testing.T) {
	testModEnv(t)
	r := &Report{GoModule: "example.com/m", Files: []File{{Filename: "lib.go", Mutations: []Mutation{
		libMutant(t, "CONDITIONALS_NEGATION", Lived, "< lo"),        // user's TestClampEdges fails
		libMutant(t, "CONDITIONALS_BOUNDARY", Lived, "< lo"),        // v <= lo returns lo == v: no test can tell
		libMutant(t, "REMOVE_SELF_ASSIGNMENTS", NotCovered, "+= i"), // Sum(4) = 4
		libMutant(t, "INCREMENT_DECREMENT", NotCovered, "++"),       // Sum counts down for ever
		libMutant(t, "INVERT_LOOPCTRL", Lived, "break"),             // continue outside a loop: no build
		libMutant(t, "ARITHMETIC_BASE", Lived, "/ 2"),               // nothing calls Half
		libMutant(t, "ARITHMETIC_BASE", Killed, "+ v"),              // gremlins' verdict stands: not run again
		libMutant(t, "CONDITIONALS_NEGATION", NotViable, "> hi"),    // nor this one
		libMutant(t, "ARITHMETIC_BASE", NotCovered, "+ 1"),          // lib's own TestInc fails: run for a mutant gremlins ran nothing on
		libMutant(t, "ARITHMETIC_BASE", Lived, "+ 1"),               // lib's own tests passed on it (gremlins ran them), user's do not test Inc
	}}}}
	var lines []string
	err := Retest(context.Background(), r, Options{
		ModuleDir: modDir, Pkg: "lib", Tests: []string{"./user"},
		Timeout: 5 * time.Second,
		Log:     func(f string, a ...any) { lines = append(lines, f) },
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{Killed, Lived, Killed, TimedOut, NotViable, Lived, Killed, NotViable, Killed, Lived}
	for i, m := range r.Files[0].Mutations {
		if m.Status != want[i] {
			t.Errorf("mutant %d (%s at %d:%d): %s, want %s", i, m.Type, m.Line, m.Column, m.Status, want[i])
		}
	}
	// 8 runs of mutants and the unmutated one, a log line each.
	if len(lines) != 9 {
		t.Errorf("%d log lines, want 9", len(lines))
	}
	if r.MutantsKilled != 4 || r.MutantsLived != 3 || r.MutantsNotViable != 2 || r.MutantsNotCovered != 0 || r.MutantsTotal != 7 {
		t.Errorf("counts: killed %d lived %d not viable %d not covered %d total %d, want 4 3 2 0 7",
			r.MutantsKilled, r.MutantsLived, r.MutantsNotViable, r.MutantsNotCovered, r.MutantsTotal)
	}
	if r.TestEfficacy != 100*4.0/7 || r.MutationsCoverage != 100 {
		t.Errorf("efficacy %v %%, coverage %v %%, want 4/7 and 100", r.TestEfficacy, r.MutationsCoverage)
	}
	if r.RetestedWith != "./user; ./lib too for those not covered" {
		t.Errorf("retested_with %q", r.RetestedWith)
	}
	// The tree was never written: the mutants were overlays.
	src, _ := os.ReadFile(filepath.Join(modDir, "lib", "lib.go"))
	if !strings.Contains(string(src), "if v < lo {") || !strings.Contains(string(src), "i++") {
		t.Error("lib.go changed on disk")
	}
}

func TestRetestNeedsTheUnmutatedTestsToPass(t *testing.T) {
	testModEnv(t)
	r := &Report{Files: []File{{Filename: "lib.go", Mutations: []Mutation{libMutant(t, "ARITHMETIC_BASE", Lived, "/ 2")}}}}
	err := Retest(context.Background(), r, Options{ModuleDir: modDir, Pkg: "lib", Tests: []string{"./user"}, Run: "TestNoSuch|TestSum", Timeout: time.Minute})
	if err != nil {
		t.Fatalf("a -run that selects a passing test: %v", err)
	}
	r.Files[0].Mutations[0].Status = Lived
	err = Retest(context.Background(), r, Options{ModuleDir: modDir, Pkg: "lib", Tests: []string{"./nosuchpkg"}})
	if err == nil || !strings.Contains(err.Error(), "the unmutated tests did not pass") {
		t.Fatalf("tests that cannot run: %v, want the unmutated run named", err)
	}
	if r.Files[0].Mutations[0].Status != Lived {
		t.Error("a failed retest changed a status")
	}
}

func TestRetestRefusesAStaleReport(t *testing.T) {
	testModEnv(t)
	m := libMutant(t, "ARITHMETIC_BASE", Lived, "/ 2")
	m.Column++
	r := &Report{Files: []File{{Filename: "lib.go", Mutations: []Mutation{m}}}}
	err := Retest(context.Background(), r, Options{ModuleDir: modDir, Pkg: "lib", Tests: []string{"./user"}, Timeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "lib/lib.go: mutant ARITHMETIC_BASE at") {
		t.Fatalf("got %v, want the file and the mutant named", err)
	}
}

func TestReportRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	// gremlins v0.6.0's output, as it writes it.
	if err := os.WriteFile(in, []byte(`{"go_module":"example.com/m","files":[{"file_name":"lib.go","mutations":[{"type":"ARITHMETIC_BASE","status":"LIVED","line":27,"column":33}]}],"test_efficacy":0,"mutations_coverage":100,"mutants_total":1,"mutants_killed":0,"mutants_lived":1,"mutants_not_viable":0,"mutants_not_covered":0,"elapsed_time":1.5,"mutator_statistics":{"arithmetic_base":1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := ReadReport(in)
	if err != nil {
		t.Fatal(err)
	}
	r.Files[0].Mutations[0].Status = Killed
	r.Recount()
	out := filepath.Join(dir, "out.json")
	if err := r.Write(out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	for _, want := range []string{`"test_efficacy":100`, `"mutants_killed":1`, `"mutants_lived":0`, `"arithmetic_base":1`, `"elapsed_time":1.5`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("written report lacks %s:\n%s", want, b)
		}
	}
	if err := os.WriteFile(in, []byte(`{"files":[{"file_name":"lib.go","mutations":[{"type":"X","status":"LIVED","line":0,"column":3}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReport(in); err == nil || !strings.Contains(err.Error(), "lib.go: mutant X at 0:3: no such position") {
		t.Errorf("a report with line 0: %v", err)
	}
}
