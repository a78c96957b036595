#!/usr/bin/env bash
# Prints the Debian version of the tree (or of DESCRIBE COMMIT_UNIX_TIME given as arguments, for
# tests). dpkg must sort every later build higher, whatever its commit hash looks like:
#   v1.2.3                      → 1.2.3
#   v1.2.3-4-gabc1234[-dirty]   → 1.2.3+4.gabc1234[.dirty]      (after 1.2.3, before 1.2.4)
#   untagged abc1234[-dirty]    → 0.0.0~git20261203061500.abc1234[.dirty]
#                                 (the commit time orders untagged builds; ~ sorts below any release)
set -euo pipefail
describe=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo unknown)}
when=${2:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
dirty=
if [[ $describe == *-dirty ]]; then dirty=.dirty; describe=${describe%-dirty}; fi
# A release tag has a dot (v1.2.3); an abbreviated hash never does, even when it starts with a digit.
if [[ $describe =~ ^v?([0-9]+\.[0-9A-Za-z.]*)-([0-9]+)-(g[0-9a-f]+)$ ]]; then
  echo "${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.${BASH_REMATCH[3]}${dirty}"
elif [[ $describe =~ ^v?([0-9]+\.[0-9A-Za-z.]*)$ ]]; then
  echo "${BASH_REMATCH[1]}${dirty}"
else
  echo "0.0.0~git$(date -u -d "@$when" +%Y%m%d%H%M%S).${describe}${dirty}"
fi
