# Sourced by scripts/vm-gpio-test.sh and scripts/vm-systemd-test.sh: logging and timings, apt, and
# Debian's current amd64 kernel with the two drivers it leaves out (gpio-sim, uleds) built out of
# tree (and, for scripts/vm-systemd-test.sh --arch arm64, the same for Debian's arm64 kernel, cross-built).
# The caller sets vm_name (log prefix), cache (directory) and vmdir (scripts/vm).
# shellcheck shell=bash

log() { printf '%s: %s\n' "$vm_name" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

t_start=$EPOCHREALTIME
timings=()
phase_begin() { phase_t0=$EPOCHREALTIME; log "$1 ..."; }
since() { awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $1}"; }
phase_end() { timings+=("$(printf '%-24s %6s s' "$1" "$(since "$phase_t0")")"); }
report_timings() {
	local t
	log "where the time went:"
	for t in "${timings[@]}"; do printf '    %s\n' "$t" >&2; done
	printf '    %-24s %6s s\n' total "$(since "$t_start")" >&2
}

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

# missing_pkgs NAME...: sets missing to those not installed.
missing_pkgs() {
	missing=()
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
}
install_missing() {
	((${#missing[@]})) || return 0
	log "installing ${missing[*]}"
	apt_update
	apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >"$cache/apt-install.log" 2>&1 ||
		{ cat "$cache/apt-install.log" >&2; die "apt-get install ${missing[*]}"; }
}

# The kernel to test is whatever Debian ships now for amd64: what the linux-image-amd64
# metapackage depends on, "linux-image-6.1.0-56-amd64 (= 6.1.192-2)". One apt-cache call: this
# machine's apt keeps no binary cache, so each call re-reads every list (seconds under load).
image_dep() { sed -n 's/^Depends: \(linux-image-[0-9][^ ]*\) (= \([^)]*\)).*/\1 \2/p' | head -1; } # "package version" from apt-cache show
kernel_dep() { { apt-cache show --no-all-versions linux-image-amd64 2>/dev/null || true; } | image_dep; }
resolve_kernel() {
	read -r image_pkg kver <<<"$dep"
	[[ -n $image_pkg && -n $kver ]] || die "apt knows no linux-image-amd64 (apt sources?)"
	abi=${image_pkg#linux-image-}          # 6.1.0-56-amd64
	series=$(echo "$kver" | cut -d. -f1,2) # 6.1
	kdir=$cache/kernel-$kver
	# Debian's names for the headers of that ABI and for what they depend on.
	kpkgs=("$image_pkg" "linux-headers-$abi" "linux-headers-${abi%-amd64}-common" "linux-kbuild-$series" "linux-source-$series")
}

# Downloaded, not installed (no /boot, no initramfs-tools hooks on the host), and only the files
# needed are taken out.
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

# kernel_begin: resolves the kernel (refreshing apt lists on a fresh machine or when tools are
# missing: set missing first) and starts fetching its packages in the background.
kernel_pid=""
kernel_begin() {
	dep=$(kernel_dep)
	if [[ -z $dep ]] || ((${#missing[@]})); then # a fresh machine: no lists yet, tools to install
		apt_update
		dep=$(kernel_dep)
	fi
	resolve_kernel
	log "kernel: $image_pkg $kver (linux-source-$series)"
	if [[ ! -f $kdir/.extracted ]]; then
		log "fetching ${kpkgs[*]} $kver in the background"
		kernel_t0=$EPOCHREALTIME
		fetch_kernel >"$cache/kernel-fetch.log" 2>&1 &
		kernel_pid=$!
	fi
}

# kernel_wait: waits for the background fetch; on failure refreshes apt lists and retries once.
kernel_wait() {
	[[ -n $kernel_pid ]] || return 0
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
	timings+=("$(printf '%-24s %6s s' "  (kernel fetch, bg)" "$(since "$kernel_t0")")")
}

# arm64_kernel (after kernel_wait): Debian's arm64 kernel of the same version. One source package
# builds both architectures, so the sources, the -common headers and linux-kbuild (host tools, which
# must be amd64's to run here) come from the amd64 fetch; only linux-headers-<abi>-arm64 is arm64's.
# apt here knows amd64 only: a private set of arm64 lists ($cache/apt-arm64) leaves the host's apt
# and dpkg configuration as they are. Sets abi64 and kdir64.
apt_arm64() {
	local a=$cache/apt-arm64
	mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
	"$1" "${apt_opts[@]}" -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" \
		-o APT::Architecture=arm64 -o APT::Architectures::=arm64 "${@:2}"
}
arm64_kernel() {
	local pkg64 kver64
	dep64() { { apt_arm64 apt-cache show --no-all-versions linux-image-arm64 2>/dev/null || true; } | image_dep; }
	read -r pkg64 kver64 <<<"$(dep64)"
	if [[ $kver64 != "$kver" ]]; then # no lists yet, or older ones than the host's
		apt_arm64 apt-get update || die "apt-get update (arm64 lists)"
		read -r pkg64 kver64 <<<"$(dep64)"
	fi
	[[ $kver64 == "$kver" ]] || die "Debian's arm64 kernel is ${kver64:-unknown}, its amd64 kernel $kver (mirror mid-update?)"
	abi64=${pkg64#linux-image-}
	kdir64=$cache/kernel-$kver-arm64
	[[ ! -f $kdir64/.extracted ]] || return 0
	log "fetching linux-headers-$abi64 $kver (arm64)"
	rm -rf "$kdir64" && mkdir -p "$kdir64/debs" "$kdir64/root/usr/lib" "$kdir64/root/usr/src"
	(cd "$kdir64/debs" && apt_arm64 apt-get download "linux-headers-$abi64=$kver") || die "apt-get download linux-headers-$abi64"
	dpkg-deb -x "$(echo "$kdir64"/debs/linux-headers-*.deb)" "$kdir64/root"
	ln -s "$kdir/root/usr/lib/linux-kbuild-$series" "$kdir64/root/usr/lib/"
	ln -s "$kdir/root/usr/src/linux-headers-${abi%-amd64}-common" "$kdir64/root/usr/src/"
	sed -i "s|^include /usr/src/|include $kdir64/root/usr/src/|" "$kdir64/root/usr/src/linux-headers-$abi64/Makefile"
	rm -rf "$kdir64/debs"
	touch "$kdir64/.extracted"
}

# build_kmod [arm64]: gpio-sim.ko and uleds.ko for $abi (or, cross-built with Debian's
# aarch64-linux-gnu compiler, for $abi64) in $kmod (cached by kernel and by scripts/vm/kmod).
build_kmod() {
	phase_begin "kernel modules${1:+ ($1)}"
	local kmod_key kcc kabi=$abi hdir=$kdir/root/usr/src/linux-headers-$abi cross=() prefix=""
	if [[ ${1:-} == arm64 ]]; then
		kabi=$abi64 hdir=$kdir64/root/usr/src/linux-headers-$abi64 prefix=aarch64-linux-gnu-
		cross=(ARCH=arm64 CROSS_COMPILE=$prefix)
	fi
	kmod_key=$(cat "$vmdir/kmod/Kbuild" "$vmdir/kmod/irq_sim-module.patch" | sha256sum | cut -c1-12)
	kmod=$cache/kmod-$kabi-$kver-$kmod_key
	if [[ ! -f $kmod/gpio-sim.ko || ! -f $kmod/uleds.ko ]]; then
		# The compiler the kernel was built with (gcc-12 on bookworm), named in the headers
		# (Debian's cross compiler for it: gcc-12-aarch64-linux-gnu).
		kcc=$(sed -n 's/^CC = .*[ )]\(gcc-[0-9][0-9]*\)$/\1/p' "$hdir/.kernelvariables")
		if [[ -n $kcc ]] && ! command -v "$prefix$kcc" >/dev/null; then
			missing=("$kcc${prefix:+-${prefix%-}}")
			install_missing
		fi
		rm -rf "$kmod" && mkdir -p "$kmod"
		cp "$vmdir/kmod/Kbuild" "$kmod/"
		cp "$kdir/src/drivers/gpio/gpio-sim.c" "$kmod/gpio-sim-main.c"
		cp "$kdir/src/drivers/gpio/gpiolib.h" "$kdir/src/kernel/irq/irq_sim.c" "$kdir/src/drivers/leds/uleds.c" "$kmod/"
		patch -d "$kmod" -p1 --quiet <"$vmdir/kmod/irq_sim-module.patch"
		make -s -C "$hdir" M="$kmod" "${cross[@]}" -j"$(nproc)" modules >"$kmod/build.log" 2>&1 ||
			{ cat "$kmod/build.log" >&2; die "module build"; }
	fi
	phase_end "kernel modules${1:+ ($1)}"
}
