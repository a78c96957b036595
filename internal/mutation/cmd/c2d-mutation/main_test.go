package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagsNameWhatIsMissing(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "-report: required"},
		{[]string{"-report", "r.json"}, "-pkg: required"},
		{[]string{"-report", "r.json", "-pkg", "lib"}, "-tests: required"},
		{[]string{"-report", "r.json", "-pkg", "lib", "-tests", "./user", "extra"}, `unexpected argument "extra"`},
		{[]string{"-report", "/nonexistent/r.json", "-pkg", "lib", "-tests", "./user"}, "read report: open /nonexistent/r.json"},
	} {
		var out, errw bytes.Buffer
		err := run(c.args, &out, &errw)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want %q", c.args, err, c.want)
		}
	}
}

// TestRewritesTheReport: a report whose one lived mutant user's tests kill comes back killed,
// at 100 %, in -o, and the summary line says so against gremlins' figure.
func TestRewritesTheReport(t *testing.T) {
	t.Setenv("GOWORK", "off")
	t.Setenv("GOFLAGS", "")
	mod, err := filepath.Abs("../../testdata/mod")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.json"), filepath.Join(dir, "out.json")
	// lib.go line 7 is "	if v < lo {"; gremlins' column of "<" is 7.
	if err := os.WriteFile(in, []byte(`{"go_module":"example.com/m","files":[{"file_name":"lib.go","mutations":[{"type":"CONDITIONALS_NEGATION","status":"LIVED","line":7,"column":7}]}],"test_efficacy":0,"mutants_total":1,"mutants_lived":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-report", in, "-o", out, "-C", mod, "-pkg", "lib", "-tests", "./user", "-timeout", "1m"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "lib with ./user; ./lib too for those not covered: killed 1, lived 0, not covered 0, not viable 0, timed out 0; efficacy 100.00 % (gremlins alone: 0.00 %)") {
		t.Errorf("summary:\n%s", stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"status":"KILLED"`) || !strings.Contains(string(b), `"test_efficacy":100`) {
		t.Errorf("written report: %s", b)
	}
}
