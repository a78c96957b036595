package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestFlagsAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-v"}, &out, &errb); err != nil || !strings.HasPrefix(out.String(), "c2d-agent ") {
		t.Errorf("-v: %v %q", err, out.String())
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"check-config", "--help"}, {"try", "-h"}} {
		out.Reset()
		errb.Reset()
		err := run(args, &out, &errb)
		if !errors.Is(err, errHelp) || !strings.Contains(out.String(), "Usage:") || errb.Len() != 0 {
			t.Errorf("%v: err %v, stdout %q, stderr %q (want help on stdout, exit 0)", args, err, out.String(), errb.String())
		}
	}
	// A bad flag is one error naming the fix; nothing is printed by the flag package itself.
	out.Reset()
	errb.Reset()
	err := run([]string{"-x"}, &out, &errb)
	if err == nil || err.Error() != "flag provided but not defined: -x; see `c2d-agent --help`" || errb.Len() != 0 || out.Len() != 0 {
		t.Errorf("-x: err %v, stdout %q, stderr %q", err, out.String(), errb.String())
	}
	// Flags may follow the file.
	err = run([]string{"check-config", "/nonexistent/agent.yaml", "--hardware"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/agent.yaml") {
		t.Errorf("check-config FILE --hardware: %v", err)
	}
}
