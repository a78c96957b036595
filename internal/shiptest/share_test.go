package shiptest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Each package carries its manual (made from the program's own --help), the docs it needs on a
// board without a browser, shell completions and a Debian copyright file.
func TestPackagesCarryManualsCompletionsCopyright(t *testing.T) {
	dir := debs(t)
	want := map[string][]string{
		"c2d": {"./usr/share/man/man1/c2d.1.gz", "./usr/share/bash-completion/completions/c2d",
			"./usr/share/zsh/vendor-completions/_c2d", "./usr/share/fish/vendor_completions.d/c2d.fish",
			"./usr/share/doc/c2d/cli.md", "./usr/share/doc/c2d/copyright"},
		"c2d-hub": {"./usr/share/man/man1/c2d-hub.1.gz", "./usr/share/bash-completion/completions/c2d-hub",
			"./usr/share/doc/c2d-hub/api.md", "./usr/share/doc/c2d-hub/copyright"},
		"c2d-agent": {"./usr/share/man/man1/c2d-agent.1.gz", "./usr/share/doc/c2d-agent/agent.md", "./usr/share/doc/c2d-agent/copyright"},
	}
	for pkg, files := range want {
		for _, arch := range []string{"armhf", "arm64", "amd64"} {
			list := dpkgDeb(t, "-c", deb(t, dir, pkg, arch))
			for _, f := range files {
				if !strings.Contains(list, " "+f+"\n") {
					t.Errorf("%s %s lacks %s", pkg, arch, f)
				}
			}
		}
	}
	// The manual is the program's help: c2d's names every command, including the newest.
	x := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb(t, dir, "c2d", "amd64"), x).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	page, err := exec.Command("zcat", filepath.Join(x, "usr/share/man/man1/c2d.1.gz")).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{".TH C2D 1", ".SS c2d device renew-key", ".SS c2d events", ".SS c2d send", "Exit codes:"} {
		if !bytes.Contains(page, []byte(s)) {
			t.Errorf("c2d.1 lacks %q", s)
		}
	}
	if man, err := exec.LookPath("man"); err == nil {
		out, err := exec.Command(man, "-l", filepath.Join(x, "usr/share/man/man1/c2d.1.gz")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "renew-key") {
			t.Errorf("man -l c2d.1.gz: %v\n%s", err, out)
		}
	}
}

// The copyright file names every Go module linked into the programs, so a new dependency cannot
// ship without its license being stated.
func TestCopyrightNamesEveryModule(t *testing.T) {
	dir := dist(t)
	copyright, err := os.ReadFile(filepath.Join(root, "scripts", "deb", "copyright"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"c2d_linux_amd64", "c2d-hub_linux_amd64", "c2d-agent_linux_armv6"} {
		out, err := exec.Command("go", "version", "-m", filepath.Join(dir, bin)).Output()
		if err != nil {
			t.Fatalf("go version -m %s: %v", bin, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == "dep" && !strings.Contains(string(copyright), "\n "+f[1]+"\n") &&
				!strings.Contains(string(copyright), "Files: "+f[1]+"\n") {
				t.Errorf("%s links %s, which scripts/deb/copyright does not list", bin, f[1])
			}
		}
	}
}
