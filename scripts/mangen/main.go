// Command mangen writes the man pages of c2d, c2d-hub and c2d-agent from the programs' own --help
// (so a page never says what the program does not), and c2d's and c2d-hub's shell completion
// files. scripts/package-deb.sh runs it with binaries for the build machine:
//
//	go run ./scripts/mangen -o DIR -version V -date 2026-12-03 c2d=PATH c2d-hub=PATH c2d-agent=PATH
//
// DIR/man/NAME.1.gz (gzip without a timestamp: reproducible) and DIR/completion/NAME.{bash,zsh,fish}.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

var summaries = map[string]string{
	"c2d":       "send commands to boards through a c2d hub and see whether they were carried out",
	"c2d-hub":   "self-hosted, Azure IoT Hub-compatible cloud-to-device hub",
	"c2d-agent": "carry out cloud-to-device commands on a board's GPIO lines and LEDs",
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("o", "dist/share", "output directory")
	ver := flag.String("version", "dev", "version for the page footer")
	date := flag.String("date", "", "date for the page footer (YYYY-MM-DD)")
	flag.Parse()
	for _, arg := range flag.Args() {
		name, bin, ok := strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("argument %q: want NAME=PATH", arg)
		}
		page, err := manPage(name, bin, *ver, *date)
		if err != nil {
			return err
		}
		if err := writeGz(filepath.Join(*out, "man", name+".1.gz"), page); err != nil {
			return err
		}
		if name == "c2d-agent" {
			continue // no completion command: its flags are few and documented
		}
		for _, sh := range []string{"bash", "zsh", "fish"} {
			b, err := exec.Command(bin, "completion", sh).Output()
			if err != nil {
				return fmt.Errorf("%s completion %s: %w", name, sh, err)
			}
			if err := write(filepath.Join(*out, "completion", name+"."+sh), b); err != nil {
				return err
			}
		}
	}
	return nil
}

// manPage is NAME(1): the program's --help, then every subcommand's (cobra's "Available
// Commands:" list, recursively).
func manPage(name, bin, ver, date string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, ".TH %s 1 %q %q \"c2d manual\"\n.SH NAME\n%s \\- %s\n", strings.ToUpper(name), date, name+" "+ver, name, summaries[name])
	top, err := help(bin)
	if err != nil {
		return nil, err
	}
	b.WriteString(".SH DESCRIPTION\n")
	pre(&b, top)
	subs := commands(top)
	if len(subs) > 0 {
		b.WriteString(".SH COMMANDS\n")
	}
	var walk func(path []string, list []string) error
	walk = func(path []string, list []string) error {
		for _, c := range list {
			p := append(append([]string(nil), path...), c)
			h, err := help(bin, p...)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, ".SS %s\n", roffText(name+" "+strings.Join(p, " ")))
			pre(&b, h)
			if err := walk(p, commands(h)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(nil, subs); err != nil {
		return nil, err
	}
	b.WriteString(".SH SEE ALSO\n")
	var see []string
	for _, o := range []string{"c2d", "c2d-agent", "c2d-hub"} {
		if o != name {
			see = append(see, "\\fB"+o+"\\fR(1)")
		}
	}
	fmt.Fprintf(&b, "%s; /usr/share/doc/%s\n", strings.Join(see, ", "), name)
	return b.Bytes(), nil
}

func help(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, append(args, "--help")...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"} // no C2D_* of the builder
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s --help: %w", bin, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// commands lists the subcommands of a cobra help text, without help and completion.
func commands(h string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(h, "\n") {
		switch {
		case strings.HasPrefix(l, "Available Commands:"):
			in = true
		case in && strings.HasPrefix(l, "  "):
			if f := strings.Fields(l); len(f) > 0 && f[0] != "help" && f[0] != "completion" {
				out = append(out, f[0])
			}
		case in:
			in = false
		}
	}
	return out
}

// pre writes text as a no-fill block, so help text keeps its layout.
func pre(b *bytes.Buffer, text string) {
	b.WriteString(".nf\n")
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString(roffText(l) + "\n")
	}
	b.WriteString(".fi\n")
}

func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func writeGz(path string, data []byte) error {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression) // zero ModTime, no name: reproducible
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return write(path, b.Bytes())
}

func write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
