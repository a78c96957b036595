#!/usr/bin/env bash
# Debian packages from the cross-built binaries (nfpm, run as a Go tool; no Docker):
#   c2d-agent for armhf (the GOARM=6 build, so it runs on Pi Zero/1 too), arm64, amd64;
#   c2d-hub and c2d for armhf (GOARM=6), arm64 and amd64.   Output: dist/*.deb
# Usage: scripts/package-deb.sh [-o DIR] [-a ARCH,...]   (runs scripts/cross-build.sh first when
#   binaries are missing; -a limits the Debian architectures: armhf, arm64, amd64)
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist
arches=armhf,arm64,amd64
while getopts "o:a:" opt; do
  case $opt in o) out=$OPTARG ;; a) arches=$OPTARG ;; *) echo "usage: $0 [-o DIR] [-a armhf,arm64,amd64]" >&2; exit 2 ;; esac
done
declare -A gotarget=([armhf]=armv6 [arm64]=arm64 [amd64]=amd64)
targets=()
for a in ${arches//,/ }; do
  [[ -n ${gotarget[$a]:-} ]] || { echo "package-deb: unknown architecture $a (want armhf, arm64, amd64)" >&2; exit 2; }
  targets+=("${gotarget[$a]}")
done
want() { [[ ,$arches, == *",$1,"* ]]; }

# The Debian version (scripts/deb/version.sh says how every later build sorts higher).
VERSION=$(scripts/deb/version.sh)
export VERSION

need_build=()
for p in c2d-agent c2d-hub c2d; do
  for t in "${targets[@]}"; do [[ -x $out/${p}_linux_$t ]] || need_build+=("$p"); done
done
if ((${#need_build[@]})); then
  targets_csv=$(IFS=,; echo "${targets[*]}")
  scripts/cross-build.sh -o "$out" -t "$targets_csv" $(printf '%s\n' "${need_build[@]}" | sort -u)
fi

# Man pages (from each program's --help) and shell completions, made by binaries for this machine.
case $(uname -m) in x86_64) host=amd64 ;; aarch64) host=arm64 ;; *) host="" ;; esac
hostbin=$out
# No binaries for this machine among those built (-a arm64 on an amd64 host): build them aside.
if [[ -z $host ]] || ! want "$host"; then
  hostbin=$out/.host && host=host && mkdir -p "$hostbin"
  for p in c2d-agent c2d-hub c2d; do
    CGO_ENABLED=0 go build -trimpath -o "$hostbin/${p}_linux_host" "./$(case $p in c2d-agent) echo agent/cmd/c2d-agent ;; c2d-hub) echo cloud/cmd/c2d-hub ;; c2d) echo service-cli/cmd/c2d ;; esac)"
  done
fi
mandate=$(date -u -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)" +%Y-%m-%d)
go run ./scripts/mangen -o "$out/share" -version "$VERSION" -date "$mandate" \
  c2d="$hostbin/c2d_linux_$host" c2d-hub="$hostbin/c2d-hub_linux_$host" c2d-agent="$hostbin/c2d-agent_linux_$host"

nfpm() { go tool -modfile=tools/go.mod nfpm "$@"; }
bindir=$(realpath "$out")
build() { # package debarch gotarget
  local recipe="$out/.$1_$2.yaml"
  # nfpm does not expand variables in source paths: render the recipe first.
  sed -e "s#src: dist/#src: $bindir/#" -e "s#\${GOTARGET}#$3#g" -e "s#\${ARCH}#$2#g" \
      -e "s#\${VERSION}#$VERSION#g" "scripts/deb/$1.yaml" > "$recipe"
  local log
  if ! log=$(nfpm package --config "$recipe" --packager deb --target "$out/${1}_${VERSION}_$2.deb" 2>&1); then
    echo "package-deb: nfpm failed for $1 $2: $log" >&2
    exit 1
  fi
  rm -f "$recipe"
  echo "packaged $out/${1}_${VERSION}_$2.deb"
}
want armhf && for p in c2d-agent c2d-hub c2d; do build "$p" armhf armv6; done
for a in arm64 amd64; do
  want "$a" || continue
  for p in c2d-agent c2d-hub c2d; do build "$p" "$a" "$a"; done
done
