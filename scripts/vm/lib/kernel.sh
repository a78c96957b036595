# Sourced by scripts/vm-gpio-test.sh and scripts/vm-systemd-test.sh: logging and timings, apt, and
# Debian's current amd64 kernel with the two drivers it leaves out (gpio-sim, uleds) built out of
# tree. The caller sets vm_name (log prefix), cache (directory) and vmdir (scripts/vm).
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
kernel_dep() { { apt-cache show --no-all-versions linux-image-amd64 2>/dev/null || true; } | sed -n 's/^Depends: \(linux-image-[0-9][^ ]*\) (= \([^)]*\)).*/\1 \2/p' | head -1; }
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

# build_kmod: gpio-sim.ko and uleds.ko for $abi in $kmod (cached by kernel and by scripts/vm/kmod).
build_kmod() {
	phase_begin "kernel modules"
	local kmod_key kcc
	kmod_key=$(cat "$vmdir/kmod/Kbuild" "$vmdir/kmod/irq_sim-module.patch" | sha256sum | cut -c1-12)
	kmod=$cache/kmod-$abi-$kver-$kmod_key
	if [[ ! -f $kmod/gpio-sim.ko || ! -f $kmod/uleds.ko ]]; then
		# The compiler the kernel was built with (gcc-12 on bookworm), named in the headers.
		kcc=$(sed -n 's/^CC = .*[ )]\(gcc-[0-9][0-9]*\)$/\1/p' "$kdir/root/usr/src/linux-headers-$abi/.kernelvariables")
		if [[ -n $kcc ]] && ! command -v "$kcc" >/dev/null; then
			missing=("$kcc")
			install_missing
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
}
