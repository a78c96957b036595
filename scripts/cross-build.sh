#!/usr/bin/env bash
# Static, reproducible builds of c2d-agent, c2d-hub and c2d for every board and host we support:
#   dist/<program>_linux_{armv6,armv7,arm64,amd64}  plus dist/SHA256SUMS
# armv6 (GOARM=6) runs on every 32-bit Pi including Zero/1; armv7 on Pi 2/3 32-bit; arm64 on Pi 3/4/5
# with a 64-bit OS. Two runs from the same commit give identical bytes (-trimpath, no build ids that
# depend on paths, version from git, no timestamps).
#
# Usage: scripts/cross-build.sh [-o DIR] [-t TARGET,...] [program ...]
#   default: all three programs for every target into dist/; -t limits the targets (armv6,armv7,arm64,amd64)
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
only=""
while getopts "o:t:" opt; do
  case $opt in
    o) out=$OPTARG ;;
    t) only=",$OPTARG," ;;
    *) echo "usage: $0 [-o DIR] [-t armv6,armv7,arm64,amd64] [c2d-agent|c2d-hub|c2d ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
programs=("$@")
((${#programs[@]})) || programs=(c2d-agent c2d-hub c2d)

if ! command -v go >/dev/null 2>&1; then
  echo "cross-build: no 'go' on PATH. Install Go 1.26 (https://go.dev/doc/install, or /usr/local/go/bin on PATH) and retry." >&2
  exit 1
fi

declare -A pkg=(
  [c2d-agent]=./agent/cmd/c2d-agent
  [c2d-hub]=./cloud/cmd/c2d-hub
  [c2d]=./service-cli/cmd/c2d
)
# target name → GOARCH GOARM
targets=("armv6 arm 6" "armv7 arm 7" "arm64 arm64 -" "amd64 amd64 -")

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=${COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
ldflags="-s -w -buildid= -X github.com/c2d-project/c2d/internal/version.Version=${version} -X github.com/c2d-project/c2d/internal/version.Commit=${commit}"

mkdir -p "$out"
for p in "${programs[@]}"; do
  [[ -n ${pkg[$p]:-} ]] || { echo "cross-build: unknown program $p (want c2d-agent, c2d-hub or c2d)" >&2; exit 2; }
  for t in "${targets[@]}"; do
    read -r name arch arm <<<"$t"
    [[ -z $only || $only == *",$name,"* ]] || continue
    dst="$out/${p}_linux_${name}"
    goarm=()
    [[ $arm == - ]] || goarm=(GOARM="$arm")
    env CGO_ENABLED=0 GOOS=linux GOARCH="$arch" "${goarm[@]}" \
      go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$dst" "${pkg[$p]}"
    echo "built $dst ($(stat -c %s "$dst") bytes)"
  done
done
(cd "$out" && sha256sum $(ls | grep -v -e '^SHA256SUMS$' -e '\.deb$' | sort) > SHA256SUMS)
echo "checksums in $out/SHA256SUMS (version $version, commit $commit)"
