#!/usr/bin/env bash
# VM GPIO test: our real periph.io hardware backend driving the simulated GPIO lines (gpio-sim) and
# LEDs (uleds) of a real Debian kernel booted under qemu (TCG), checked from the kernel's side.
#
#   bash scripts/vm-gpio-test.sh          # as root on Debian bookworm amd64, Go on PATH
#
# What it does, each step cached under $C2D_VM_CACHE (default .cache/vm-gpio in the repo):
#   1. installs the host tools it lacks from Debian (qemu-system-x86, gcc-12, make, binutils, patch);
#   2. downloads (apt-get download, not installed) the current Debian kernel: linux-image-<abi>,
#      linux-headers-<abi> (+ -common, linux-kbuild), linux-source-<series> of the SAME version,
#      and busybox-static; takes only the files it needs out of them;
#   3. builds gpio-sim and uleds (not enabled in Debian's kernel) out of tree against those headers,
#      from linux-source's gpio-sim.c, gpiolib.h, irq_sim.c (patched, scripts/vm/kmod) and uleds.c;
#   4. builds the static test binaries (go test -c -tags vmgpio, CGO_ENABLED=0);
#   5. packs an initramfs: busybox, scripts/vm/init, the modules (+ configfs, ledtrig-timer from
#      the image package), the test binaries;
#   6. boots it with qemu-system-x86_64 and exits 0 only if the guest printed its PASS line.
# Prints where the time went. Environment: C2D_VM_CACHE, C2D_VM_TIMEOUT (seconds for the boot,
# default 150), C2D_VM_PKGS (Go packages with vmgpio tests, in run order).
set -euo pipefail
shopt -s nullglob

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${C2D_VM_CACHE:-$repo/.cache/vm-gpio}
boot_timeout=${C2D_VM_TIMEOUT:-150}
# Run order: the harness self-check first (a failure there means the VM, not our code, is broken).
pkgs=(${C2D_VM_PKGS:-./scripts/vm/vmsim})
vmdir=$repo/scripts/vm

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
trap report_timings EXIT

[[ $(id -u) == 0 ]] || die "run as root (installs Debian packages, builds an initramfs with device nodes)"
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
	local i
	for i in 1 2 3 4 5 6; do
		apt-get "${apt_opts[@]}" update && { apt_updated=1; return 0; }
		log "apt-get update failed (lock held by another apt?), retrying"
		sleep 5
	done
	die "apt-get update"
}

# --- 1. host tools ----------------------------------------------------------------------------
phase_begin "host packages"
need=(qemu-system-x86 gcc-12 make binutils patch libelf1 libssl3 xz-utils)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# The kernel to test is whatever Debian ships now for amd64: apt's view of linux-image-amd64.
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1; }
[[ -n $(kernel_pkg) ]] || apt_update # apt lists missing on a fresh machine
if ((${#missing[@]})); then
	apt_update
	log "installing ${missing[*]}"
	apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >"$cache/apt-install.log" 2>&1 ||
		{ cat "$cache/apt-install.log" >&2; die "apt-get install ${missing[*]}"; }
fi
phase_end "host packages"

# --- 2. kernel packages -------------------------------------------------------------------------
phase_begin "kernel packages"
image_pkg=$(kernel_pkg)
[[ -n $image_pkg ]] || die "apt knows no linux-image-amd64 (apt sources?)"
abi=${image_pkg#linux-image-}
kver=$(apt-cache show --no-all-versions "$image_pkg" | sed -n 's/^Version: //p' | head -1)
series=$(echo "$kver" | cut -d. -f1,2)
kdir=$cache/kernel-$kver
log "kernel: $image_pkg $kver (linux-source-$series)"
deps=$(apt-cache depends "linux-headers-$abi")
common_pkg=$(echo "$deps" | sed -n 's/^ *Depends: \(linux-headers-.*-common\)$/\1/p')
kbuild_pkg=$(echo "$deps" | sed -n 's/^ *Depends: \(linux-kbuild-.*\)$/\1/p')
[[ -n $common_pkg && -n $kbuild_pkg ]] || die "cannot tell the headers' dependencies: $deps"
kpkgs=("$image_pkg" "linux-headers-$abi" "$common_pkg" "$kbuild_pkg" "linux-source-$series")

if [[ ! -f $kdir/.extracted ]]; then
	rm -rf "$kdir" && mkdir -p "$kdir/debs" "$kdir/root" "$kdir/src"
	fetch() { (cd "$kdir/debs" && apt-get "${apt_opts[@]}" download "${kpkgs[@]/%/=$kver}" busybox-static); }
	if ! fetch; then
		log "download failed; refreshing apt lists (an old security update is gone from the mirror?)"
		apt_updated="" && apt_update
		fetch || die "apt-get download ${kpkgs[*]} (=$kver)"
	fi
	t0=$EPOCHREALTIME
	# linux-source is a 140 MB tarball in a .deb: stream it, keep four files.
	srcdeb=$(echo "$kdir"/debs/linux-source-"$series"_*.deb)
	(dpkg-deb --fsys-tarfile "$srcdeb" | tar -xO "./usr/src/linux-source-$series.tar.xz" |
		tar -xJ -C "$kdir/src" --strip-components=1 \
			"linux-source-$series/drivers/gpio/gpio-sim.c" "linux-source-$series/drivers/gpio/gpiolib.h" \
			"linux-source-$series/kernel/irq/irq_sim.c" "linux-source-$series/drivers/leds/uleds.c") &
	src_pid=$!
	for p in "linux-headers-$abi" "$common_pkg" "$kbuild_pkg"; do
		dpkg-deb -x "$(echo "$kdir"/debs/"${p}"_*.deb)" "$kdir/root"
	done
	dpkg-deb --fsys-tarfile "$(echo "$kdir"/debs/"${image_pkg}"_*.deb)" |
		tar -x -C "$kdir/root" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/fs/configfs/configfs.ko' \
			'./lib/modules/*/kernel/drivers/leds/trigger/ledtrig-timer.ko'
	dpkg-deb -x "$(echo "$kdir"/debs/busybox-static_*.deb)" "$kdir/busybox"
	wait "$src_pid" || die "extract sources from $srcdeb"
	# The headers' Makefile includes the -common tree by absolute path; point it at our copy.
	sed -i "s|^include /usr/src/|include $kdir/root/usr/src/|" "$kdir/root/usr/src/linux-headers-$abi/Makefile"
	rm -rf "$kdir/debs" # 225 MB we no longer need
	touch "$kdir/.extracted"
	log "extracted in $(since "$t0") s"
fi
phase_end "kernel packages"

# --- 3. modules ---------------------------------------------------------------------------------
phase_begin "kernel modules"
kmod_key=$(cat "$vmdir/kmod/Kbuild" "$vmdir/kmod/irq_sim-module.patch" | sha256sum | cut -c1-12)
kmod=$cache/kmod-$abi-$kver-$kmod_key
if [[ ! -f $kmod/gpio-sim.ko || ! -f $kmod/uleds.ko ]]; then
	rm -rf "$kmod" && mkdir -p "$kmod"
	cp "$vmdir/kmod/Kbuild" "$kmod/"
	cp "$kdir/src/drivers/gpio/gpio-sim.c" "$kmod/gpio-sim-main.c"
	cp "$kdir/src/drivers/gpio/gpiolib.h" "$kdir/src/kernel/irq/irq_sim.c" "$kdir/src/drivers/leds/uleds.c" "$kmod/"
	patch -d "$kmod" -p1 --quiet <"$vmdir/kmod/irq_sim-module.patch"
	make -s -C "$kdir/root/usr/src/linux-headers-$abi" M="$kmod" -j"$(nproc)" modules >"$kmod/build.log" 2>&1 ||
		{ cat "$kmod/build.log" >&2; die "module build"; }
fi
phase_end "kernel modules"

# --- 4. test binaries ---------------------------------------------------------------------------
phase_begin "test binaries"
stage=$cache/initramfs
rm -rf "$stage" && mkdir -p "$stage"/{bin,dev,proc,sys,tmp,root,lib/modules,tests}
: >"$stage/tests/order"
for p in "${pkgs[@]}"; do
	name=$(echo "${p#./}" | tr / -).test
	(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go test -c -tags vmgpio -trimpath -o "$stage/tests/$name" "$p") ||
		die "build $p"
	echo "$name -test.v -test.count=1 -test.timeout=120s" >>"$stage/tests/order"
done
phase_end "test binaries"

# --- 5. initramfs -------------------------------------------------------------------------------
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

# --- 6. boot ------------------------------------------------------------------------------------
phase_begin "boot + guest tests"
run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
serial=$cache/serial.log
set +e
timeout --kill-after=5 "$boot_timeout" qemu-system-x86_64 -nographic -no-reboot -nic none -accel tcg -cpu max -m 512 \
	-kernel "$kdir/root/boot/vmlinuz-$abi" -initrd "$cache/initrd" \
	-append "console=ttyS0 panic=-1 quiet c2d.run=$run_id" </dev/null 2>&1 | tr -d '\r' | tee "$serial"
rc=${PIPESTATUS[0]}
set -e
phase_end "boot + guest tests"

result=$(sed -n "s/^C2D-VM-GPIO-RESULT $run_id: //p" "$serial" | tail -1)
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
log "PASS: guest tests passed on Debian kernel $abi $kver"
