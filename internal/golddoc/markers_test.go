package golddoc

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, line string
		want      bool
	}{
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"a...c", "abbbc", true},
		{"a...c", "abbb", false},
		{"1d9c...: unknown", "1d9c-77: unknown", true},
		{"...x", "yyx", true},
		{"x...", "x", true},
	} {
		if got := Match(tc.pat, tc.line); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.pat, tc.line, got)
		}
	}
	if !Contains("c2d: cannot reach the hub at http://x: refused\n", "cannot reach the hub at ...") {
		t.Error("Contains")
	}
}

func TestParse(t *testing.T) {
	doc := "x\n<!-- golden: one -->\n\n   ```\n   a\n   b...\n   ```\n<!-- golden-table: t -->\n| says | do |\n| --- | --- |\n| `m1` (exit 1) | x |\n| plain | y |\n"
	q, err := Parse("d.md", doc)
	if err != nil || len(q) != 2 || q[0].Name != "one" || len(q[0].Lines) != 2 || q[0].Lines[1] != "b..." ||
		!q[1].Table || q[1].Lines[0] != "m1" || q[1].Line != 11 {
		t.Fatalf("Parse = %+v, %v", q, err)
	}
	if _, err := Parse("d.md", "<!-- golden: x -->\ntext\n"); err == nil {
		t.Error("a marker before text was accepted")
	}
}
