package shiptest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	debOnce sync.Once
	debErr  error
	debLog  []byte
)

// debs builds every Debian package from the cross-built binaries, once.
func debs(t *testing.T) string {
	t.Helper()
	dir := dist(t)
	debOnce.Do(func() {
		cmd := exec.Command("bash", "scripts/package-deb.sh", "-o", dir)
		cmd.Dir = root
		debLog, debErr = cmd.CombinedOutput()
	})
	if debErr != nil {
		t.Fatalf("scripts/package-deb.sh: %v\n%s", debErr, debLog)
	}
	return dir
}

func deb(t *testing.T, dir, pkg, arch string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*_"+arch+".deb"))
	if len(m) != 1 {
		t.Fatalf("want one %s %s package in %s, found %v", pkg, arch, dir, m)
	}
	return m[0]
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestPackagesForEveryBoard(t *testing.T) {
	dir := debs(t)
	want := map[string][]string{
		"c2d-agent": {"armhf", "arm64", "amd64"},
		"c2d-hub":   {"armhf", "arm64", "amd64"},
		"c2d":       {"armhf", "arm64", "amd64"},
	}
	for pkg, arches := range want {
		for _, arch := range arches {
			f := deb(t, dir, pkg, arch)
			info := dpkgDeb(t, "-I", f)
			if !strings.Contains(info, "Package: "+pkg+"\n") || !strings.Contains(info, "Architecture: "+arch+"\n") {
				t.Errorf("%s: control says\n%s", filepath.Base(f), info)
			}
		}
	}
}

func TestAgentPackageContents(t *testing.T) {
	dir := debs(t)
	f := deb(t, dir, "c2d-agent", "armhf")
	list := dpkgDeb(t, "-c", f)
	for _, path := range []string{
		"./usr/bin/c2d-agent", "./etc/c2d/agent.yaml", "./lib/systemd/system/c2d-agent.service",
		"./lib/systemd/system/c2d-agent.path", "./lib/udev/rules.d/60-c2d-leds.rules",
	} {
		if !strings.Contains(list, path+"\n") {
			t.Errorf("c2d-agent.deb lacks %s:\n%s", path, list)
		}
	}
	ctrl := t.TempDir()
	dpkgDeb(t, "-e", f, ctrl)
	conffiles, _ := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if !strings.Contains(string(conffiles), "/etc/c2d/agent.yaml") {
		t.Errorf("/etc/c2d/agent.yaml is not a conffile (the user's edits would be lost on upgrade): %q", conffiles)
	}
	// The armhf package must carry the GOARM=6 build, or a Pi Zero/1 dies with SIGILL.
	x := t.TempDir()
	dpkgDeb(t, "-x", f, x)
	got, err := os.ReadFile(filepath.Join(x, "usr/bin/c2d-agent"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "c2d-agent_linux_armv6"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("c2d-agent armhf package does not contain the armv6 binary")
	}
}

// scratchRoot is an empty system with just enough for dpkg and useradd.
func scratchRoot(t *testing.T) string {
	t.Helper()
	r := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"var/lib/dpkg/status": "",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/bash\n",
		"etc/group":           "root:x:0:\n",
		"etc/shadow":          "root:*:19000:0:99999:7:::\n",
		"etc/gshadow":         "root:*::\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(r, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func dpkgRoot(t *testing.T, r string, args ...string) string {
	t.Helper()
	base := []string{"--root=" + r, "--force-script-chrootless", "--log=/dev/null"}
	out, err := exec.Command("dpkg", append(base, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func exists(r, p string) bool {
	_, err := os.Lstat(filepath.Join(r, p))
	return err == nil
}

func TestAgentPackageInstallRemovePurge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing into a scratch root needs root (CI runs as root)")
	}
	dir := debs(t)
	r := scratchRoot(t)
	out := dpkgRoot(t, r, "-i", deb(t, dir, "c2d-agent", "amd64"))
	if !strings.Contains(out, "/etc/c2d/connection-string") {
		t.Errorf("install does not tell the user to write the connection string:\n%s", out)
	}
	passwd, _ := os.ReadFile(filepath.Join(r, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(r, "etc/group"))
	if !strings.Contains(string(passwd), "c2d-agent:x:") || strings.Contains(string(passwd), "c2d-agent:x:0:") {
		t.Errorf("no unprivileged c2d-agent system user:\n%s", passwd)
	}
	if !strings.Contains(string(group), "gpio:x:") || !strings.Contains(string(group), "c2d-agent") {
		t.Errorf("c2d-agent is not in group gpio:\n%s", group)
	}
	for _, p := range []string{
		"etc/systemd/system/multi-user.target.wants/c2d-agent.service",
		"etc/systemd/system/multi-user.target.wants/c2d-agent.path",
		"var/lib/c2d-agent", "etc/c2d/agent.yaml", "usr/bin/c2d-agent",
	} {
		if !exists(r, p) {
			t.Errorf("after install, %s is missing", p)
		}
	}

	// The operator configures the board; remove must keep that, purge must not.
	if err := os.WriteFile(filepath.Join(r, "etc/c2d/connection-string"), []byte("HostName=h;DeviceId=d;SharedAccessKey=a2V5\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	// README's install step 4 puts the hub's CA here; the package did not ship it, purge removes it.
	if err := os.WriteFile(filepath.Join(r, "etc/c2d/hub-ca.pem"), []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dpkgRoot(t, r, "-r", "c2d-agent")
	if exists(r, "usr/bin/c2d-agent") {
		t.Error("remove left the binary")
	}
	if !exists(r, "etc/c2d/agent.yaml") || !exists(r, "etc/c2d/connection-string") || !exists(r, "etc/c2d/hub-ca.pem") {
		t.Error("remove deleted the board's configuration")
	}
	if exists(r, "etc/systemd/system/multi-user.target.wants/c2d-agent.service") {
		t.Error("remove left the unit enabled")
	}
	dpkgRoot(t, r, "-P", "c2d-agent")
	for _, p := range []string{"etc/c2d/agent.yaml", "etc/c2d/connection-string", "etc/c2d/hub-ca.pem", "var/lib/c2d-agent", "etc/c2d"} {
		if exists(r, p) {
			t.Errorf("purge left %s", p)
		}
	}
	if passwd, _ := os.ReadFile(filepath.Join(r, "etc/passwd")); strings.Contains(string(passwd), "c2d-agent:") {
		t.Errorf("purge left the c2d-agent user:\n%s", passwd)
	}
}

func TestHubPackageInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing into a scratch root needs root (CI runs as root)")
	}
	dir := debs(t)
	r := scratchRoot(t)
	dpkgRoot(t, r, "-i", deb(t, dir, "c2d-hub", "amd64"), deb(t, dir, "c2d", "amd64"))
	for _, p := range []string{
		"usr/bin/c2d-hub", "usr/bin/c2d", "etc/c2d/hub.yaml", "var/lib/c2d-hub",
		"etc/systemd/system/multi-user.target.wants/c2d-hub.service",
	} {
		if !exists(r, p) {
			t.Errorf("after install, %s is missing", p)
		}
	}
	dpkgRoot(t, r, "-P", "c2d-hub", "c2d")
	if exists(r, "var/lib/c2d-hub") || exists(r, "etc/c2d/hub.yaml") {
		t.Error("purge left the hub's data or config")
	}
	if passwd, _ := os.ReadFile(filepath.Join(r, "etc/passwd")); strings.Contains(string(passwd), "c2d-hub:") {
		t.Errorf("purge left the c2d-hub user:\n%s", passwd)
	}
}
