#!/usr/bin/env bash
# Build the C++ library `pgn`, its example and tests, and the Python module pgn_deploy._native.
#
#   cpp_bindings/scripts/build.sh [--if-available] [--test]
#
# Build inputs, all fetched or found by this script (nothing set up by hand):
#   * ONNX Runtime shared library: the one inside the venv's `onnxruntime` wheel
#     (onnxruntime/capi/libonnxruntime.so.*), or PGN_ONNXRUNTIME_ROOT=<dir with include/ and lib/>.
#   * ONNX Runtime C/C++ headers: Debian trixie's libonnxruntime-dev, downloaded with a private
#     apt configuration (no system change) and unpacked into cpp_bindings/build/deps/.
#   * nlohmann-json (header only): the system's, else Debian bookworm's nlohmann-json3-dev, fetched
#     the same way.
#   * OpenCV (core, imgproc, imgcodecs): the system's; when missing and running as root with
#     apt-get, the Debian packages are installed (libopencv-{core,imgproc,imgcodecs}-dev).
#   * doctest (header only, C++ tests): the system's, else Debian bookworm's doctest-dev.
#   * pybind11 (Python bindings): the venv's `pybind11` package; without it only the C++ parts build.
#   * TensorRT (optional): PGN_TENSORRT_ROOT=<dir with include/NvInfer.h and lib/libnvinfer.so>.
#
# --if-available: a missing build input prints "SKIP: <reason>" and exits 0 (used by `make test`);
#                 without it a missing input is an error (exit 2). A failing compile always fails.
# --test:         run the C++ tests (ctest) after building.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CPP_DIR="$(dirname "$HERE")"
REPO="$(dirname "$CPP_DIR")"
BUILD="$CPP_DIR/build"
DEPS="$BUILD/deps"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
JOBS="${PGN_BUILD_JOBS:-2}"

IF_AVAILABLE=0
RUN_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --if-available) IF_AVAILABLE=1 ;;
    --test) RUN_TESTS=1 ;;
    *) echo "build.sh: unknown argument $arg (use --if-available, --test)" >&2; exit 2 ;;
  esac
done

log() { echo "[pgn-cpp] $*"; }

missing() {  # a build input is absent: skip or fail depending on --if-available
  if [[ $IF_AVAILABLE == 1 ]]; then
    echo "SKIP: C++ library and bindings not built: $*"
    exit 0
  fi
  echo "build.sh: error: $*" >&2
  exit 2
}

# ------------------------------------------------------------------ tools
command -v cmake >/dev/null || missing "cmake is not installed (apt-get install cmake)"
command -v c++ >/dev/null || missing "no C++ compiler (apt-get install g++)"
[[ -x $PYTHON ]] || missing "no Python at $PYTHON (run make install first)"
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)

# ------------------------------------------------------------------ private apt (Debian archives)
APT_DIR="$BUILD/apt"
apt_private() {  # apt-get with its own sources and lists under build/apt: nothing system-wide
  apt-get -q -o Dir::Etc::sourcelist="$APT_DIR/sources.list" -o Dir::Etc::sourceparts=/nonexistent \
    -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache" \
    -o APT::Sandbox::User=root "$@"
}
fetch_deb() {  # fetch_deb PACKAGE/RELEASE DEST: download one .deb and unpack it into DEST
  local pkg="$1" dest="$2"
  command -v apt-get >/dev/null || missing "apt-get is needed to fetch $pkg (or see docs/cpp.md)"
  if [[ ! -f $APT_DIR/.updated ]]; then
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    cat >"$APT_DIR/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOF
    log "reading the Debian package lists (private apt folder $APT_DIR)"
    apt_private update >/dev/null || missing "cannot read the Debian package lists (no network?)"
    touch "$APT_DIR/.updated"
  fi
  local tmp
  tmp="$(mktemp -d "$BUILD/deb.XXXXXX")"
  (cd "$tmp" && apt_private download "$pkg" >/dev/null 2>&1) || {
    rm -rf "$tmp"
    missing "cannot download the Debian package $pkg"
  }
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg-deb -x "$tmp"/*.deb "$dest"
  log "fetched $(basename "$tmp"/*.deb)"
  rm -rf "$tmp"
}

mkdir -p "$DEPS"

# ------------------------------------------------------------------ ONNX Runtime
if [[ -n ${PGN_ONNXRUNTIME_ROOT:-} ]]; then
  ORT_ROOT="$PGN_ONNXRUNTIME_ROOT"
  log "ONNX Runtime from PGN_ONNXRUNTIME_ROOT=$ORT_ROOT"
else
  ORT_LIB="$("$PYTHON" - <<'EOF' 2>/dev/null || true
import pathlib, onnxruntime
libs = sorted(pathlib.Path(onnxruntime.__file__).parent.joinpath("capi").glob("libonnxruntime.so.*"))
print(libs[0] if libs else "")
EOF
)"
  [[ -n $ORT_LIB ]] || missing "the venv's onnxruntime package has no libonnxruntime.so (set PGN_ONNXRUNTIME_ROOT)"
  ORT_ROOT="$DEPS/onnxruntime"
  if [[ ! -f $ORT_ROOT/include/onnxruntime_cxx_api.h ]]; then
    fetch_deb libonnxruntime-dev/trixie "$DEPS/libonnxruntime-dev"
    mkdir -p "$ORT_ROOT"
    rm -rf "$ORT_ROOT/include"
    cp -r "$DEPS/libonnxruntime-dev/usr/include/onnxruntime" "$ORT_ROOT/include"
  fi
  # The wheel ships libonnxruntime.so.<version> only; the linker and loader want these names.
  mkdir -p "$ORT_ROOT/lib"
  ln -sfn "$ORT_LIB" "$ORT_ROOT/lib/libonnxruntime.so.1"
  ln -sfn "$ORT_LIB" "$ORT_ROOT/lib/libonnxruntime.so"
  # The C API is versioned: headers must not be newer than the library (ORT_API_VERSION = minor).
  header_api="$(sed -n 's/^#define ORT_API_VERSION \([0-9]*\).*/\1/p' "$ORT_ROOT/include/onnxruntime_c_api.h")"
  lib_minor="$(basename "$ORT_LIB" | sed -n 's/^libonnxruntime\.so\.[0-9]*\.\([0-9]*\).*/\1/p')"
  if [[ -z $header_api || -z $lib_minor || $header_api -gt $lib_minor ]]; then
    missing "ONNX Runtime headers (API ${header_api:-?}) are newer than the library $ORT_LIB"
  fi
  log "ONNX Runtime library $ORT_LIB (API $lib_minor), headers API $header_api"
fi

# ------------------------------------------------------------------ nlohmann-json
JSON_ARGS=()
if [[ ! -f /usr/include/nlohmann/json.hpp ]]; then
  if [[ ! -f $DEPS/nlohmann-json/usr/include/nlohmann/json.hpp ]]; then
    fetch_deb nlohmann-json3-dev/bookworm "$DEPS/nlohmann-json"
  fi
  JSON_ARGS=(-Dnlohmann_json_DIR="$(dirname "$(find "$DEPS/nlohmann-json" -name nlohmann_jsonConfig.cmake | head -1)")")
fi

# ------------------------------------------------------------------ doctest (C++ tests)
DOCTEST_ARGS=()
if [[ ! -f /usr/include/doctest/doctest.h ]]; then
  if [[ ! -f $DEPS/doctest/usr/include/doctest/doctest.h ]]; then
    fetch_deb doctest-dev/bookworm "$DEPS/doctest"
  fi
  DOCTEST_ARGS=(-DPGN_DOCTEST_INCLUDE_DIR="$DEPS/doctest/usr/include")
fi

# ------------------------------------------------------------------ OpenCV
OPENCV_PACKAGES=(libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev)
have_opencv() { [[ -f /usr/include/opencv4/opencv2/imgcodecs.hpp || -n ${OpenCV_DIR:-} ]]; }
if ! have_opencv; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing OpenCV: ${OPENCV_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    APT_LOCK=(-o DPkg::Lock::Timeout=600)
    apt-get "${APT_LOCK[@]}" install -y -q --no-install-recommends "${OPENCV_PACKAGES[@]}" >/dev/null 2>&1 || {
      apt-get "${APT_LOCK[@]}" update -q >/dev/null 2>&1 || true
      apt-get "${APT_LOCK[@]}" install -y -q --no-install-recommends "${OPENCV_PACKAGES[@]}" >/dev/null 2>&1
    } || missing "cannot install OpenCV (${OPENCV_PACKAGES[*]})"
  else
    missing "OpenCV C++ is not installed and this user cannot install it: apt-get install ${OPENCV_PACKAGES[*]} (or set OpenCV_DIR)"
  fi
fi

# ------------------------------------------------------------------ pybind11
PYBIND_ARGS=(-DPGN_BUILD_PYTHON=OFF)
if PYBIND_DIR="$("$PYTHON" -c 'import pybind11; print(pybind11.get_cmake_dir())' 2>/dev/null)"; then
  PYBIND_ARGS=(-DPGN_BUILD_PYTHON=ON -Dpybind11_DIR="$PYBIND_DIR" -DPython_EXECUTABLE="$PYTHON"
    -DPGN_PYTHON_MODULE_DIR="$BUILD/python-stage")
else
  log "pybind11 is not installed in the venv: the Python module pgn_deploy._native is not built"
fi

TRT_ARGS=()
[[ -n ${PGN_TENSORRT_ROOT:-} ]] && TRT_ARGS=(-DPGN_WITH_TENSORRT=ON -DPGN_TENSORRT_ROOT="$PGN_TENSORRT_ROOT")

# ------------------------------------------------------------------ configure, build, install
start=$SECONDS
cmake -S "$CPP_DIR" -B "$BUILD/release" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DPGN_ONNXRUNTIME_ROOT="$ORT_ROOT" -DPGN_BUILD_TESTS=ON -DPGN_BUILD_EXAMPLES=ON \
  "${JSON_ARGS[@]}" "${DOCTEST_ARGS[@]}" "${PYBIND_ARGS[@]}" "${TRT_ARGS[@]}" >/dev/null
cmake --build "$BUILD/release" --parallel "$JOBS"
if [[ ${PYBIND_ARGS[0]} == -DPGN_BUILD_PYTHON=ON ]]; then
  # Staged, then renamed into the package: a process that has the old module loaded keeps it.
  rm -rf "$BUILD/python-stage"
  cmake --install "$BUILD/release" --component python >/dev/null
  for module in "$BUILD"/python-stage/_native*.so; do
    mv -f "$module" "$REPO/pgn_deploy/$(basename "$module")"
  done
  log "installed the Python module pgn_deploy._native ($REPO/pgn_deploy)"
fi
log "built in $((SECONDS - start)) s ($BUILD/release)"

if [[ $RUN_TESTS == 1 ]]; then
  ctest --test-dir "$BUILD/release" --output-on-failure
fi
