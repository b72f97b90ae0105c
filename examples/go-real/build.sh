#!/usr/bin/env bash
# Builds the real-library cgo services (zstdsvc, rocksdbsvc) into OUT_DIR (default
# target/go-real at the repository root). Installs Debian's librocksdb-dev first when its
# headers are missing (needs root). A binary newer than every file it is built from is kept:
# with an empty Go build cache both take about a minute on 2 cores (zstd's C sources alone
# ~30 s), a rebuild with nothing changed no time at all.
# Usage: examples/go-real/build.sh [OUT_DIR] [zstdsvc|rocksdbsvc ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../target/go-real}"
shift || true
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(zstdsvc rocksdbsvc)
mkdir -p "$out"
out="$(cd "$out" && pwd)"

need_rocksdb=0
for s in "${services[@]}"; do [ "$s" = rocksdbsvc ] && need_rocksdb=1; done
if [ $need_rocksdb = 1 ] && [ ! -e /usr/include/rocksdb/c.h ]; then
    echo "build.sh: installing librocksdb-dev" >&2
    # grocksdb v1.7.14 is the release written against RocksDB 7.8.3, Debian bookworm's.
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q librocksdb-dev >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q librocksdb-dev >/dev/null; }
fi

cd "$here"
for s in "${services[@]}"; do
    [ -d "$s" ] || { echo "build.sh: no service $s" >&2; exit 2; }
    bin="$out/$s"
    # Anything the binary depends on in this module: its own package, the shared one, the
    # module files (which pin the bindings' versions).
    if [ -x "$bin" ] && [ -z "$(find "$s" internal go.mod go.sum -newer "$bin" -print -quit)" ]; then
        continue
    fi
    echo "build.sh: building $s" >&2
    go build -o "$bin.tmp" "./$s"
    mv "$bin.tmp" "$bin"
done
