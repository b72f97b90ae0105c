#!/usr/bin/env bash
# Installs what offheap's build, main job and tests need on a fresh Debian machine that already
# has Rust, Go and gcc. Safe to run again: it only installs what is missing.
set -euo pipefail

need=()
# package:command pairs; the tests run these real programs with and without the library.
for pkg_cmd in valgrind:valgrind sqlite3:sqlite3 heaptrack:heaptrack binutils:readelf \
               git:git perl:perl python3:/usr/bin/python3 gcc:gcc strace:strace; do
  pkg=${pkg_cmd%%:*}; cmd=${pkg_cmd##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# valgrind names glibc's internal functions only with its detached debug symbols.
dpkg -s libc6-dbg >/dev/null 2>&1 || need+=(libc6-dbg)
# A program that links its own allocator (the library must forward to it).
dpkg -s libjemalloc-dev >/dev/null 2>&1 || need+=(libjemalloc-dev)
# The oldest Go layout we support (asmcgocall saves g elsewhere there).
[ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-1.19-go)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]} (apt-get install -y ${need[*]})" >&2
    exit 1
  fi
fi
# The newest Go release, fetched through the module proxy on first use.
GOTOOLCHAIN=go1.27.3 go version >/dev/null
