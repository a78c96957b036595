package mutation

import (
	"bytes"
	"strings"
	"testing"
)

// at is the line and byte column (1-based) of the first mark in src, found by counting, not by
// the scanner Apply uses.
func at(t *testing.T, src, mark string) (line, col int) {
	t.Helper()
	i := strings.Index(src, mark)
	if i < 0 {
		t.Fatalf("no %q in the source", mark)
	}
	before := src[:i]
	return strings.Count(before, "\n") + 1, i - strings.LastIndex(before, "\n")
}

func TestApplySwapsTheTokenAsGremlinsDoes(t *testing.T) {
	const src = "package p\n\nfunc f(a, b int) bool {\n\tfor a < b {\n\t\ta += b\n\t\tif a == 3 && b > 1 {\n\t\t\tbreak\n\t\t}\n\t\ta++\n\t}\n\treturn a-b >= -b\n}\n"
	for _, c := range []struct {
		typ, mark, want string
	}{
		{"CONDITIONALS_BOUNDARY", "< b", "for a <= b {"},
		{"CONDITIONALS_NEGATION", "< b", "for a >= b {"},
		{"CONDITIONALS_NEGATION", "== 3", "if a != 3 &&"},
		{"INVERT_ASSIGNMENTS", "+= b", "a -= b"},
		{"REMOVE_SELF_ASSIGNMENTS", "+= b", "\ta = b\n"},
		{"INVERT_LOGICAL", "&&", "a == 3 || b > 1"},
		{"CONDITIONALS_BOUNDARY", "> 1", "b >= 1 {"},
		{"INVERT_LOOPCTRL", "break", "\t\t\tcontinue\n"},
		{"INCREMENT_DECREMENT", "++", "\ta--\n"},
		{"ARITHMETIC_BASE", "-b >=", "return a+b >= -b"},
		{"INVERT_NEGATIVES", "-b\n", "a-b >= +b\n"},
		{"CONDITIONALS_NEGATION", ">= -b", "a-b < -b"},
	} {
		line, col := at(t, src, c.mark)
		got, err := Apply([]byte(src), Mutation{Type: c.typ, Line: line, Column: col})
		if err != nil {
			t.Errorf("%s at %q: %v", c.typ, c.mark, err)
			continue
		}
		if !strings.Contains(string(got), c.want) {
			t.Errorf("%s at %q: got\n%s\nwant it to contain %q", c.typ, c.mark, got, c.want)
		}
		// Everything but the token is untouched: only the token's bytes differ.
		i := strings.Index(src, c.mark)
		if string(got[:i]) != src[:i] {
			t.Errorf("%s at %q: changed the text before the token", c.typ, c.mark)
		}
		tail := src[i:]
		if !bytes.HasSuffix(got, []byte(tail[strings.IndexAny(tail, " \n"):])) {
			t.Errorf("%s at %q: changed the text after the token", c.typ, c.mark)
		}
	}
}

func TestApplyRefusesAReportOfAnotherFile(t *testing.T) {
	const src = "package p\n\nvar x = 1 + 2 // a + in a comment\n"
	line, col := at(t, src, "+ 2")
	for _, c := range []struct {
		m    Mutation
		want string
	}{
		{Mutation{Type: "CONDITIONALS_NEGATION", Line: line, Column: col}, `the token there is "+", which CONDITIONALS_NEGATION does not change`},
		{Mutation{Type: "ARITHMETIC_BASE", Line: line, Column: col + 1}, "3:12: no token starts there"},
		{Mutation{Type: "ARITHMETIC_BASE", Line: line, Column: strings.Index(src, "+ in") - strings.LastIndex(src[:strings.Index(src, "+ in")], "\n")}, "no token starts there"},
		{Mutation{Type: "ARITHMETIC_BASE", Line: 9, Column: 1}, "9:1: no token starts there"},
		{Mutation{Type: "SWAP_EVERYTHING", Line: line, Column: col}, `unknown mutator "SWAP_EVERYTHING"`},
	} {
		_, err := Apply([]byte(src), c.m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Apply(%+v) = %v, want an error containing %q", c.m, err, c.want)
		}
	}
}

// FuzzApply: whatever the source and position, Apply does not panic, and a mutant it makes
// differs from the source only where the token was.
func FuzzApply(f *testing.F) {
	f.Add([]byte("package p\nvar x = a < b\n"), "CONDITIONALS_BOUNDARY", 2, 11)
	f.Add([]byte("package p\nfunc f() { for { break } }\n"), "INVERT_LOOPCTRL", 2, 18)
	f.Add([]byte("x += \"unterminated\n"), "REMOVE_SELF_ASSIGNMENTS", 1, 3)
	f.Fuzz(func(t *testing.T, src []byte, typ string, line, col int) {
		got, err := Apply(src, Mutation{Type: typ, Line: line, Column: col})
		if err != nil {
			return
		}
		i := 0
		for i < len(src) && i < len(got) && src[i] == got[i] {
			i++
		}
		j := 0
		for j < len(src)-i && j < len(got)-i && src[len(src)-1-j] == got[len(got)-1-j] {
			j++
		}
		if d := len(got) - i - j; d < 0 || d > len("continue") {
			t.Fatalf("Apply changed %d bytes of %q: %q", d, src, got)
		}
	})
}
