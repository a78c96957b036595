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

log() { printf 'vm-gpio: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

t_start=$EPOCHREALTIME
timings=()
phase_begin() { phase_t0=$EPOCHREALTIME; log "$1 ..."; }
since() { awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $1}"; }
phase_end() { timings+=("$(printf '%-22s %6s s' "$1" "$(since "$phase_t0")")"); }
report_timings() {
	local t
	log "where the time went:"
	for t in "${timings[@]}"; do printf '    %s\n' "$t" >&2; done
	printf '    %-22s %6s s\n' total "$(since "$t_start")" >&2
}
kernel_pid=""
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

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -o APT::Sandbox::User=root -qq)
apt_updated=""
apt_update() {
	[[ -z $apt_updated ]] || return 0
	local try
	for try in 1 2 3 4 5 6; do
		apt-get "${apt_opts[@]}" update && { apt_updated=1; return 0; }
		log "apt-get update failed (try $try; lock held by another apt?), retrying"
		sleep 5
	done
	die "apt-get update"
}

# --- 1. which kernel ---------------------------------------------------------------------------
phase_begin "apt lists + kernel"
need=(qemu-system-x86 gcc-12 make binutils patch libelf1 libssl3 xz-utils)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# The kernel to test is whatever Debian ships now for amd64: what the linux-image-amd64
# metapackage depends on, "linux-image-6.1.0-56-amd64 (= 6.1.192-2)". One apt-cache call: this
# machine's apt keeps no binary cache, so each call re-reads every list (seconds under load).
kernel_dep() { { apt-cache show --no-all-versions linux-image-amd64 2>/dev/null || true; } | sed -n 's/^Depends: \(linux-image-[0-9][^ ]*\) (= \([^)]*\)).*/\1 \2/p' | head -1; }
dep=$(kernel_dep)
if [[ -z $dep ]] || ((${#missing[@]})); then # a fresh machine: no lists yet, tools to install
	apt_update
	dep=$(kernel_dep)
fi
resolve_kernel() {
	read -r image_pkg kver <<<"$dep"
	[[ -n $image_pkg && -n $kver ]] || die "apt knows no linux-image-amd64 (apt sources?)"
	abi=${image_pkg#linux-image-}          # 6.1.0-56-amd64
	series=$(echo "$kver" | cut -d. -f1,2) # 6.1
	kdir=$cache/kernel-$kver
	# Debian's names for the headers of that ABI and for what they depend on.
	kpkgs=("$image_pkg" "linux-headers-$abi" "linux-headers-${abi%-amd64}-common" "linux-kbuild-$series" "linux-source-$series")
}
resolve_kernel
log "kernel: $image_pkg $kver (linux-source-$series)"
phase_end "apt lists + kernel"

# --- 2. kernel packages, in the background --------------------------------------------------------
# Downloaded, not installed (no /boot, no initramfs-tools hooks on the host), and only the files
# needed are taken out. Runs while the host tools install and the test binaries build.
fetch_kernel() {
	rm -rf "$kdir" && mkdir -p "$kdir/debs" "$kdir/root" "$kdir/src"
	fetch() { (cd "$kdir/debs" && apt-get "${apt_opts[@]}" download "${kpkgs[@]/%/=$kver}" busybox-static); }
	fetch || return 1
	# linux-source is a 140 MB tarball in a .deb: stream it, keep four files.
	local srcdeb src_pid p
	srcdeb=$(echo "$kdir"/debs/linux-source-"$series"_*.deb)
	(dpkg-deb --fsys-tarfile "$srcdeb" | tar -xO "./usr/src/linux-source-$series.tar.xz" |
		tar -xJ -C "$kdir/src" --strip-components=1 \
			"linux-source-$series/drivers/gpio/gpio-sim.c" "linux-source-$series/drivers/gpio/gpiolib.h" \
			"linux-source-$series/kernel/irq/irq_sim.c" "linux-source-$series/drivers/leds/uleds.c") &
	src_pid=$!
	for p in "${kpkgs[@]:1:3}"; do
		dpkg-deb -x "$(echo "$kdir"/debs/"${p}"_*.deb)" "$kdir/root" || return 1
	done
	dpkg-deb --fsys-tarfile "$(echo "$kdir"/debs/"${image_pkg}"_*.deb)" |
		tar -x -C "$kdir/root" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/fs/configfs/configfs.ko' \
			'./lib/modules/*/kernel/drivers/leds/trigger/ledtrig-timer.ko' || return 1
	dpkg-deb -x "$(echo "$kdir"/debs/busybox-static_*.deb)" "$kdir/busybox" || return 1
	wait "$src_pid" || { echo "extracting sources from $srcdeb failed"; return 1; }
	# The headers' Makefile includes the -common tree by absolute path; point it at our copy.
	sed -i "s|^include /usr/src/|include $kdir/root/usr/src/|" "$kdir/root/usr/src/linux-headers-$abi/Makefile"
	rm -rf "$kdir/debs" # 225 MB no longer needed
	touch "$kdir/.extracted"
}
kernel_pid=""
if [[ ! -f $kdir/.extracted ]]; then
	log "fetching ${kpkgs[*]} $kver in the background"
	kernel_t0=$EPOCHREALTIME
	fetch_kernel >"$cache/kernel-fetch.log" 2>&1 &
	kernel_pid=$!
fi

# --- 3. host tools ------------------------------------------------------------------------------
phase_begin "host packages"
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >"$cache/apt-install.log" 2>&1 ||
		{ cat "$cache/apt-install.log" >&2; die "apt-get install ${missing[*]}"; }
fi
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

if [[ -n $kernel_pid ]]; then
	phase_begin "kernel packages (wait)"
	if ! wait "$kernel_pid"; then
		kernel_pid=""
		# Most likely stale apt lists naming a version the mirror no longer has: refresh, retry.
		tail -5 "$cache/kernel-fetch.log" >&2
		log "fetching the kernel failed; refreshing apt lists and retrying"
		apt_updated="" && apt_update
		dep=$(kernel_dep) && resolve_kernel
		log "kernel: $image_pkg $kver (linux-source-$series)"
		fetch_kernel >"$cache/kernel-fetch.log" 2>&1 || { cat "$cache/kernel-fetch.log" >&2; die "fetching the kernel packages"; }
	fi
	kernel_pid=""
	phase_end "kernel packages (wait)"
	timings+=("$(printf '%-22s %6s s' "  (kernel fetch, bg)" "$(since "$kernel_t0")")")
fi

# --- 5. modules ---------------------------------------------------------------------------------
phase_begin "kernel modules"
kmod_key=$(cat "$vmdir/kmod/Kbuild" "$vmdir/kmod/irq_sim-module.patch" | sha256sum | cut -c1-12)
kmod=$cache/kmod-$abi-$kver-$kmod_key
if [[ ! -f $kmod/gpio-sim.ko || ! -f $kmod/uleds.ko ]]; then
	# The compiler the kernel was built with (gcc-12 on bookworm), named in the headers.
	kcc=$(sed -n 's/^CC = .*[ )]\(gcc-[0-9][0-9]*\)$/\1/p' "$kdir/root/usr/src/linux-headers-$abi/.kernelvariables")
	if [[ -n $kcc ]] && ! command -v "$kcc" >/dev/null; then
		log "installing $kcc (the kernel's compiler)"
		apt_update
		apt-get "${apt_opts[@]}" install -y --no-install-recommends "$kcc" >"$cache/apt-install.log" 2>&1 ||
			{ cat "$cache/apt-install.log" >&2; die "apt-get install $kcc"; }
	fi
	rm -rf "$kmod" && mkdir -p "$kmod"
	cp "$vmdir/kmod/Kbuild" "$kmod/"
	cp "$kdir/src/drivers/gpio/gpio-sim.c" "$kmod/gpio-sim-main.c"
	cp "$kdir/src/drivers/gpio/gpiolib.h" "$kdir/src/kernel/irq/irq_sim.c" "$kdir/src/drivers/leds/uleds.c" "$kmod/"
	patch -d "$kmod" -p1 --quiet <"$vmdir/kmod/irq_sim-module.patch"
	make -s -C "$kdir/root/usr/src/linux-headers-$abi" M="$kmod" -j"$(nproc)" modules >"$kmod/build.log" 2>&1 ||
		{ cat "$kmod/build.log" >&2; die "module build"; }
fi
phase_end "kernel modules"

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
