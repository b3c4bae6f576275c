# scripts/deps.sh - sourced by the quick-start scripts: makes sure the Debian
# packages burst builds and tests with are installed.  As root it installs
# what is missing; otherwise it prints the one line to run and stops.

BURST_BUILD_DEPS="gcc pkg-config meson ninja-build libuv1-dev libcurl4-openssl-dev \
libmsgpack-dev libsqlite3-dev libssl-dev"
# clang and libclang-rt-14-dev (libFuzzer's runtime, only "recommended" by
# clang-14) build the libFuzzer targets of the 'fuzz' suite.
BURST_TEST_DEPS="libcmocka-dev procps valgrind clang libclang-rt-14-dev"

burst_missing_packages() {
    local missing="" p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $p"
        fi
    done
    echo "${missing# }"
}

burst_ensure_packages() {
    local missing
    missing=$(burst_missing_packages "$@")
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing:$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq $missing >&2 || {
            echo "error: apt-get install $missing failed" >&2
            return 1
        }
    else
        echo "missing packages:$missing" >&2
        echo "run this first:  sudo apt-get install -y $missing" >&2
        return 1
    fi
}
