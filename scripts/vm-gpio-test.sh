#!/usr/bin/env bash
# VM GPIO test: our real periph.io hardware backend driving the simulated GPIO lines (gpio-sim) and
# LEDs (uleds) of a real Debian kernel booted under qemu (TCG), checked from the kernel's side.
#
#   bash scripts/vm-gpio-test.sh          # as root on Debian bookworm amd64, Go on PATH
#
# What it does, each step cached under $C2D_VM_CACHE (default .cache/vm-gpio in the repo):
#   1. asks apt which kernel Debian ships now for amd64 (linux-image-amd64's dependency);
#   2. in the background, downloads (apt-get download, nothing installed) linux-image-<abi>,
#      linux-headers-<abi> (+ -common, linux-kbuild), linux-source-<series> of that SAME version,
#      and busybox-static, and takes only the files it needs out of them;
#   3. meanwhile installs the host tools it lacks (qemu-system-x86, gcc-12, make, binutils, patch)
#   4. and builds the static test binaries (go test -c -tags vmgpio, CGO_ENABLED=0) and the
#      c2d-agent and c2d-hub the end-to-end test runs;
#   5. builds gpio-sim and uleds (not enabled in Debian's kernel) out of tree against those headers,
#      from linux-source's gpio-sim.c, gpiolib.h, irq_sim.c (patched, scripts/vm/kmod) and uleds.c;
#   6. packs an initramfs: busybox, scripts/vm/init, the modules (+ configfs, ledtrig-timer from
#      the image package), the test binaries;
#   7. boots it with qemu-system-x86_64 (TCG) and exits 0 only if the guest printed its PASS line
#      (no line, a kernel panic or a timeout fail).
# Prints where the time went, and last "N passed, N failed" over the guest's tests. Environment:
#   C2D_VM_CACHE         cache directory (default .cache/vm-gpio in the repo)
#   C2D_VM_TIMEOUT       seconds for the boot and all guest tests (default 240; each test binary
#                        also has its own 120 s)
#   C2D_VM_PKGS          Go packages with vmgpio tests, in run order
#   C2D_VM_BINS          commands built into the guest's /tests/bin for the end-to-end test
#   C2D_VM_DEBUG_SCRIPT  a sh script the guest runs before the tests, for poking around
set -euo pipefail
shopt -s nullglob

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${C2D_VM_CACHE:-$repo/.cache/vm-gpio}
boot_timeout=${C2D_VM_TIMEOUT:-240}
# Run order: the harness self-check first (a failure there means the VM, not our code, is broken).
read -r -a pkgs <<<"${C2D_VM_PKGS:-./scripts/vm/vmsim ./hw/periphhw ./scripts/vm/e2e}"
# Programs the end-to-end test runs in the guest (from /tests/bin).
read -r -a bins <<<"${C2D_VM_BINS:-./agent/cmd/c2d-agent ./cloud/cmd/c2d-hub}"
vmdir=$repo/scripts/vm
((${#pkgs[@]})) || { echo "vm-gpio: C2D_VM_PKGS names no package: nothing would be tested" >&2; exit 1; }

vm_name=vm-gpio
# shellcheck source=vm/lib/kernel.sh
source "$vmdir/lib/kernel.sh"
summary=""
on_exit() {
	[[ -z $kernel_pid ]] || kill "$kernel_pid" 2>/dev/null || true
	report_timings
	# Last line, in the plain form CI reads: every guest test and subtest.
	[[ -z $summary ]] || printf 'vm-gpio: %s\n' "$summary"
}
trap on_exit EXIT

[[ $(id -u) == 0 ]] || die "run as root (installs Debian packages)"
[[ $(dpkg --print-architecture) == amd64 ]] || die "needs an amd64 Debian host (builds modules for Debian's amd64 kernel)"
command -v go >/dev/null || die "go not on PATH"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one run at a time per cache

# --- 1. which kernel; 2. its packages, in the background ---------------------------------------
phase_begin "apt lists + kernel"
missing_pkgs qemu-system-x86 gcc-12 make binutils patch libelf1 libssl3 xz-utils
kernel_begin
phase_end "apt lists + kernel"

# --- 3. host tools, while the kernel downloads --------------------------------------------------
phase_begin "host packages"
install_missing
phase_end "host packages"

# --- 4. test binaries ---------------------------------------------------------------------------
phase_begin "test binaries"
stage=$cache/initramfs
rm -rf "$stage" && mkdir -p "$stage"/{bin,dev,proc,sys,tmp,root,lib/modules,tests}
: >"$stage/tests/order"
(cd "$repo" && go vet -tags vmgpio "${pkgs[@]}") || die "go vet -tags vmgpio ${pkgs[*]}"
for p in "${pkgs[@]}"; do
	name=$(echo "${p#./}" | tr / -).test
	(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go test -c -tags vmgpio -trimpath -ldflags '-s -w' -o "$stage/tests/$name" "$p") ||
		die "build $p"
	# Only the VM tests (TestVM*): a package's ordinary unit tests already ran on the host.
	echo "$name -test.run=^TestVM -test.v -test.count=1 -test.timeout=120s" >>"$stage/tests/order"
done
[[ -z ${C2D_VM_DEBUG_SCRIPT:-} ]] || cp "$C2D_VM_DEBUG_SCRIPT" "$stage/tests/debug.sh"
mkdir -p "$stage/tests/bin"
# The end-to-end test applies the LED udev rule the packages ship, as udev would.
cp "$repo/systemd/60-c2d-leds.rules" "$stage/tests/"
for p in "${bins[@]}"; do
	(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags '-s -w' -o "$stage/tests/bin/" "$p") ||
		die "build $p"
done
phase_end "test binaries"

kernel_wait

# --- 5. modules ---------------------------------------------------------------------------------
build_kmod

# --- 6. initramfs -------------------------------------------------------------------------------
phase_begin "initramfs"
cp "$kdir/busybox/bin/busybox" "$stage/bin/busybox"
cp "$vmdir/init" "$stage/init"
# Load order: each module after the modules it depends on (its .modinfo "depends=").
mods=("$kdir"/root/lib/modules/"$abi"/kernel/fs/configfs/configfs.ko
	"$kdir"/root/lib/modules/"$abi"/kernel/drivers/leds/trigger/ledtrig-timer.ko
	"$kmod/gpio-sim.ko" "$kmod/uleds.ko")
loaded=" "
for m in "${mods[@]}"; do
	n=$(basename "$m" .ko)
	for d in $(objcopy -O binary --only-section=.modinfo "$m" /dev/stdout | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
		[[ $loaded == *" ${d//-/_} "* ]] || die "$n needs module $d, which the initramfs does not load before it"
	done
	cp "$m" "$stage/lib/modules/"
	echo "$n.ko" >>"$stage/modules.order"
	loaded+="${n//-/_} "
done
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$kdir/busybox/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) >"$cache/initrd"
log "initrd $(du -h "$cache/initrd" | cut -f1)"
phase_end "initramfs"

# --- 7. boot -------------------------------------------------------------------------------------
phase_begin "boot + guest tests"
run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
serial=$cache/serial.log
set +e
timeout --kill-after=5 "$boot_timeout" qemu-system-x86_64 -nographic -no-reboot -nic none -accel tcg -cpu max -m 512 \
	-kernel "$kdir/root/boot/vmlinuz-$abi" -initrd "$cache/initrd" \
	-append "console=ttyS0 panic=-1 quiet c2d.run=$run_id" </dev/null 2>&1 |
	sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee "$serial"
rc=${PIPESTATUS[0]}
set -e
phase_end "boot + guest tests"

result=$(sed -n "s/^C2D-VM-GPIO-RESULT $run_id: //p" "$serial" | tail -1)
summary="$(grep -cE '^ *--- PASS: ' "$serial" || true) passed, $(grep -cE '^ *--- FAIL: ' "$serial" || true) failed"
if [[ $rc == 124 || $rc == 137 ]]; then
	die "the VM did not finish within ${boot_timeout}s (serial log: $serial)"
elif grep -q 'Kernel panic' "$serial"; then
	die "kernel panic (serial log: $serial)"
elif [[ $rc != 0 ]]; then
	die "qemu exited $rc (serial log: $serial)"
elif [[ -z $result ]]; then
	die "the guest printed no result line (serial log: $serial)"
elif [[ $result != PASS ]]; then
	die "guest tests: $result (serial log: $serial)"
fi
if grep -q 'KNOWN-BUG' "$serial"; then
	log "known bugs the guest tests skipped over (see $serial):"
	grep -o 'KNOWN-BUG.*' "$serial" | sed 's/^/    /' >&2
fi
log "PASS: guest tests passed on Debian kernel $abi $kver"
