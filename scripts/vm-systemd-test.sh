#!/usr/bin/env bash
# VM systemd test: a Pi's life under a real systemd. A Debian bookworm root filesystem built from
# Debian's packages (mmdebstrap) boots Debian's kernel under qemu (TCG) with systemd as PID 1 and a
# simulated Pi 5 (gpio-sim chip pinctrl-rp1 with GPIO0..GPIO27, uleds LED ACT, group gpio on
# /dev/gpiochip* through udev). In it, scripts/vm/systemd/guest.sh follows README's "Put it on a Pi"
# command for command with the .debs scripts/package-deb.sh builds, then faults: SIGKILL, a hung
# agent (watchdog), a hub restart, a reboot, the sandbox, apt remove and purge. See scripts/vm/README.md.
#
#   bash scripts/vm-systemd-test.sh               # as root on Debian bookworm amd64, Go on PATH
#   bash scripts/vm-systemd-test.sh --arch arm64  # the arm64 packages on Debian's arm64 kernel under
#                                                 # qemu-system-aarch64 (virt), modules cross-built
#
# Cached under $C2D_VM_CACHE (shared with scripts/vm-gpio-test.sh: kernel packages, modules) in
# systemd/ (systemd-arm64/ for arm64): the root filesystem image, keyed by the kernel, the modules and
# scripts/vm/systemd/image.
# Each run boots a fresh copy-on-write overlay of it, so the cached image is never changed.
# Prints each step with its result, where the time went, and last "vm-systemd: N passed, N failed";
# exits non-zero when a step failed or did not run. Environment:
#   C2D_VM_CACHE     cache directory (default .cache/vm-gpio in the repo)
#   C2D_VM_TIMEOUT   seconds for both boots and every step (default 900)
set -euo pipefail
shopt -s nullglob

arch=amd64
while (($#)); do
	case $1 in
	--arch) arch=${2:-}; shift 2 || true ;;
	--arch=*) arch=${1#--arch=}; shift ;;
	*) echo "usage: $0 [--arch amd64|arm64]" >&2; exit 2 ;;
	esac
done
[[ $arch == amd64 || $arch == arm64 ]] || { echo "$0: --arch amd64 or arm64, not '$arch'" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
vmdir=$repo/scripts/vm
sddir=$vmdir/systemd
cache=${C2D_VM_CACHE:-$repo/.cache/vm-gpio}
boot_timeout=${C2D_VM_TIMEOUT:-900}
vm_name=vm-systemd
sdc=$cache/systemd # this architecture's image, payload and logs
[[ $arch == amd64 ]] || sdc=$cache/systemd-$arch
# shellcheck source=vm/lib/kernel.sh
source "$vmdir/lib/kernel.sh"

passed=0 failed=0
summary=""
image_pid=""
on_exit() {
	[[ -z $kernel_pid ]] || kill "$kernel_pid" 2>/dev/null || true
	# The background mmdebstrap: its subshell and the mmdebstrap it runs.
	[[ -z $image_pid ]] || { pkill -TERM -P "$image_pid" 2>/dev/null; kill "$image_pid" 2>/dev/null; } || true
	report_timings
	[[ -z $summary ]] || { log "architecture: $arch"; printf 'vm-systemd: %s\n' "$summary"; }
}
trap on_exit EXIT

[[ $(id -u) == 0 ]] || die "run as root (installs Debian packages, builds a root filesystem)"
[[ $(dpkg --print-architecture) == amd64 ]] || die "needs an amd64 Debian host (builds modules for Debian's amd64 kernel)"
command -v go >/dev/null || die "go not on PATH"

mkdir -p "$sdc"
log "architecture: $arch"
exec 9>"$cache/.lock"
phase_begin "cache lock"
flock 9 # one run at a time per cache (the VM GPIO test shares it)
phase_end "cache lock"

# --- kernel (shared with the VM GPIO test), host tools ------------------------------------------
phase_begin "apt lists + kernel"
# mmdebstrap builds the root filesystem, e2fsprogs turns it into an image without mounting it.
host_pkgs=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs gcc-12 make binutils patch libelf1 libssl3 xz-utils kmod)
# arm64: its qemu, Debian's cross compiler for the modules, qemu-user-static (binfmt) for the
# image's maintainer scripts (arch-test: mmdebstrap checks with it that arm64 runs).
[[ $arch == amd64 ]] || host_pkgs+=(qemu-system-arm gcc-12-aarch64-linux-gnu qemu-user-static arch-test)
missing_pkgs "${host_pkgs[@]}"
kernel_begin
gabi=$abi gimage=$image_pkg # the guest's kernel
if [[ $arch == arm64 ]]; then
	arm64_kernel
	gabi=$abi64 gimage=linux-image-$abi64
	log "guest kernel: $gimage $kver (arm64)"
fi
phase_end "apt lists + kernel"
phase_begin "host packages"
install_missing
phase_end "host packages"

# --- the root filesystem, in the background ------------------------------------------------------
# What Debian's archive gives a board: systemd as init, udev, dbus, sudo (README's commands use it)
# and the kernel whose modules we build (its initramfs mounts the virtio disk). Like Raspberry Pi
# OS: a gpio group (udev gives it /dev/gpiochip*) and a user pi with passwordless sudo, who runs
# README's commands.
image_pkgs=(systemd systemd-sysv udev dbus sudo kmod procps "$gimage=$kver" initramfs-tools)
image_key=$( (printf '%s\n' "${image_pkgs[@]}"; cd "$sddir/image" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
rootfs=$sdc/rootfs-$kver-$image_key
# The archive apt here uses (mmdebstrap reads a sources file); deb.debian.org if none.
mirror=http://deb.debian.org/debian
[[ ! -s /etc/apt/sources.list.d/debian.sources ]] || mirror=/etc/apt/sources.list.d/debian.sources
# arm64: the image's maintainer scripts run under qemu-user through binfmt_misc (registered here
# from qemu-user-static's own binfmt.d entry if the host has not; F flag: it works in the chroot).
binfmt_arm64() {
	local b=/proc/sys/fs/binfmt_misc
	mountpoint -q "$b" || mount -t binfmt_misc binfmt_misc "$b" || die "cannot mount $b (needed to run arm64 maintainer scripts)"
	[[ -e $b/qemu-aarch64 ]] || cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$b/register" || die "cannot register qemu-aarch64 in $b"
}
console=ttyS0 mmdebstrap_arch=()
[[ $arch == amd64 ]] || console=ttyAMA0 mmdebstrap_arch=(--arch=arm64)
build_rootfs() {
	rm -rf "$sdc"/rootfs-* # an older image, or one cut short
	# MODULES=list: an initramfs with just what mounts the root disk (small, fast to unpack on TCG).
	mmdebstrap "${mmdebstrap_arch[@]}" --variant=apt --include="$(IFS=,; echo "${image_pkgs[*]}")" \
		--setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; printf "MODULES=list\nCOMPRESS=gzip\n" >"$1/etc/initramfs-tools/conf.d/c2d-vm"; printf "virtio_pci\nvirtio_blk\next4\n" >"$1/etc/initramfs-tools/modules"' \
		--customize-hook="cp -a '$sddir/image/.' \"\$1/\"" \
		--customize-hook='chroot "$1" groupadd --system gpio' \
		--customize-hook='chroot "$1" useradd --create-home --shell /bin/bash --groups sudo,adm pi && chmod 0440 "$1/etc/sudoers.d/010_pi-nopasswd"' \
		--customize-hook='chroot "$1" systemctl enable c2d-vm-pi.service c2d-vm-act.service c2d-vm-test.service' \
		--customize-hook='chroot "$1" systemctl mask serial-getty@'$console'.service getty@tty1.service' \
		bookworm "$rootfs.tmp" "$mirror" </dev/null &&
		mv "$rootfs.tmp" "$rootfs"
}
if [[ ! -d $rootfs ]]; then
	log "building the root filesystem (mmdebstrap bookworm $arch) in the background"
	[[ $arch == amd64 ]] || binfmt_arm64
	image_t0=$EPOCHREALTIME
	build_rootfs >"$sdc/mmdebstrap.log" 2>&1 &
	image_pid=$!
fi

# --- what the guest installs: the packages, built as README says ---------------------------------
phase_begin "packages (package-deb.sh)"
payload=$sdc/payload
rm -rf "$payload" && mkdir -p "$payload"
dist=$(mktemp -d)
trap 'rm -rf "$dist"; on_exit' EXIT
(cd "$repo" && bash scripts/package-deb.sh -o "$dist" -a "$arch") >"$sdc/package-deb.log" 2>&1 ||
	{ cat "$sdc/package-deb.log" >&2; die "scripts/package-deb.sh"; }
mkdir -p "$payload/dist"
cp "$dist"/*_"$arch".deb "$payload/dist/"
echo "$arch" >"$payload/arch"
(cd "$repo" && CGO_ENABLED=0 GOARCH=$arch go build -trimpath -ldflags '-s -w' -o "$payload/c2d-vm-act" ./scripts/vm/systemd/vmact) ||
	die "build scripts/vm/systemd/vmact"
cp "$sddir/guest.sh" "$payload/guest.sh"
log "$(cd "$payload/dist" && echo *.deb)"
phase_end "packages (package-deb.sh)"

kernel_wait
build_kmod "${abi64:+arm64}"

if [[ -n $image_pid ]]; then
	phase_begin "root filesystem (wait)"
	wait "$image_pid" || { image_pid=""; tail -30 "$sdc/mmdebstrap.log" >&2; die "mmdebstrap (log: $sdc/mmdebstrap.log)"; }
	image_pid=""
	phase_end "root filesystem (wait)"
	timings+=("$(printf '%-24s %6s s' "  (mmdebstrap, bg)" "$(since "$image_t0")")")
fi

# --- disks ----------------------------------------------------------------------------------------
phase_begin "disk images"
base=$sdc/base-$kver-$image_key-${kmod##*-}.raw
if [[ ! -f $base ]]; then
	# The modules Debian leaves out, where depmod looks first; then the filesystem as a disk.
	mkdir -p "$rootfs/lib/modules/$gabi/updates"
	cp "$kmod/gpio-sim.ko" "$kmod/uleds.ko" "$rootfs/lib/modules/$gabi/updates/"
	depmod -b "$rootfs" "$gabi"
	rm -f "$cache"/systemd/base-*.raw
	mkfs.ext4 -q -F -L c2droot -d "$rootfs" "$base.tmp" 3G && mv "$base.tmp" "$base"
fi
run_id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
echo "$run_id" >"$payload/run-id"
overlay=$sdc/run.qcow2
qemu-img create -q -f qcow2 -b "$base" -F raw "$overlay"
mkfs.ext4 -q -F -L c2dpayload -d "$payload" "$sdc/payload.raw" 256M
phase_end "disk images"

# --- boot, reboot, results -----------------------------------------------------------------------
# No -no-reboot: the guest's `systemctl reboot` boots it again from the same disks in the same qemu;
# the last step powers it off. No VGA, and drivers for qemu's PC devices that a Pi does not have
# (floppy, parallel port, KVM, ...) blacklisted: under TCG each costs seconds of every boot. One
# vCPU: with two, on a loaded host, module loading (stop_machine) left the second boot stuck.
phase_begin "boots + guest steps"
serial=$sdc/serial.log
set +e
noload=floppy,parport_pc,ppdev,pcspkr,kvm,kvm_amd,kvm_intel,ccp,sr_mod,cdrom,ata_piix,ata_generic,psmouse,serio_raw,i2c_piix4,drm,bochs,sha512_ssse3,aesni_intel,ghash_clmulni_intel
if [[ $arch == amd64 ]]; then
	qemu=(qemu-system-x86_64 -vga none -cpu max)
else
	# The virt board (PL011 console ttyAMA0, virtio on PCI); cortex-a72 as on a Pi 4, and cheaper
	# to emulate under TCG than -cpu max (no pointer authentication).
	qemu=(qemu-system-aarch64 -machine virt -cpu cortex-a72)
	noload=""
fi
timeout --kill-after=5 "$boot_timeout" "${qemu[@]}" -nographic -nic none -accel tcg -smp 1 -m 1024 \
	-kernel "$rootfs/boot/vmlinuz-$gabi" -initrd "$rootfs/boot/initrd.img-$gabi" \
	-drive "file=$overlay,if=virtio,format=qcow2" -drive "file=$sdc/payload.raw,if=virtio,format=raw,readonly=on" \
	-append "console=$console root=LABEL=c2droot rw quiet systemd.show_status=error ${noload:+modprobe.blacklist=$noload }c2d.run=$run_id" </dev/null 2>&1 |
	sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee "$serial" |
	grep --line-buffered -E "C2D-VMSD $run_id|Kernel panic|c2d-vm-pi:" | sed -u "s/.*C2D-VMSD $run_id //"
rc=${PIPESTATUS[0]}
set -e
phase_end "boots + guest steps"
rm -f "$overlay"

# Each step prints "C2D-VMSD <run> step <name>: PASS|FAIL <detail>"; guest-side phases print
# "C2D-VMSD <run> time <seconds> <name>".
while read -r secs name; do timings+=("$(printf '%-24s %6s s' "  guest: $name" "$secs")"); done < <(sed -n "s/.*C2D-VMSD $run_id time //p" "$serial")
passed=$(grep -c "C2D-VMSD $run_id step [^:]*: PASS" "$serial" || true)
failed=$(grep -c "C2D-VMSD $run_id step [^:]*: FAIL" "$serial" || true)
done_line=$(grep -c "C2D-VMSD $run_id DONE" "$serial" || true)
last=$(sed -n "s/^C2D-VMSD $run_id //p" "$serial" | grep -v '^time ' | tail -1 | cut -c1-100)
if [[ $rc == 124 || $rc == 137 ]]; then
	failed=$((failed + 1))
	summary="$passed passed, $failed failed"
	die "the VM did not finish within ${boot_timeout}s; last seen: ${last:-nothing} (serial log: $serial)"
fi
if [[ $done_line == 0 ]]; then
	failed=$((failed + 1))
	summary="$passed passed, $failed failed"
	die "the guest never reached its last step (qemu exit $rc); last seen: ${last:-nothing} (serial log: $serial)"
fi
summary="$passed passed, $failed failed"
((failed == 0)) || die "$failed step(s) failed (serial log: $serial)"
sdver=$(chroot "$rootfs" dpkg-query -W -f='${Version}' systemd 2>/dev/null || echo "?")
log "PASS: $arch run; Debian kernel $gabi $kver, systemd $sdver"
