# Shared shell helpers for scripts/*: repository paths, cache folder, logging, and the
# idempotent set-up steps (Debian packages, the CMake build). Sourced, not run.

AF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AF_ROOT
export AGENTFLEET_CACHE="${AGENTFLEET_CACHE:-$HOME/.cache/agentfleet}"

af_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
af_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# af_wait_group BOOTSTRAP GROUP WANT SECONDS: wait until consumer group GROUP is stable with
# WANT partitions assigned to its members. A group forms in a few rebalance rounds (seconds):
# load started before that waits in Kafka and is measured as latency. @returns non-zero, with
# the group's state said on stderr, at the deadline.
af_wait_group() {
  "${AF_BUILD_DIR:-$AF_ROOT/build}/af-kafka-admin" wait-group --bootstrap "$1" --group "$2" \
    --partitions "$3" --timeout-ms $(( $4 * 1000 ))
}

# Debian packages the build, the tests and the services need. Each is there for a reason the
# README gives; this list is the only place they are named.
AF_DEBIAN_PACKAGES=(
  build-essential cmake pkg-config
  librdkafka-dev libprotobuf-c-dev protobuf-c-compiler libhiredis-dev libcurl4-openssl-dev
  libevent-dev libjansson-dev libyaml-dev libssl-dev libcmocka-dev libjemalloc-dev
  redis-server redis-tools
  clang libclang-rt-14-dev clang-format
  maven default-jre-headless curl
)

# Install whatever of AF_DEBIAN_PACKAGES is missing (nothing when all are there).
af_install_packages() {
  local missing=()
  for p in "${AF_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # A JDK counts as the Java runtime the broker needs.
  if command -v java >/dev/null 2>&1; then
    missing=("${missing[@]/default-jre-headless}")
  fi
  if command -v mvn >/dev/null 2>&1; then
    missing=("${missing[@]/maven}")
  fi
  local want=()
  for p in "${missing[@]}"; do [ -n "$p" ] && want+=("$p"); done
  [ ${#want[@]} -eq 0 ] && return 0
  af_say "installing Debian packages: ${want[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

# Configure (once) and build a CMake tree. $1 = build dir, rest = extra cmake -D options.
af_build() {
  local dir="$1"; shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S "$AF_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  fi
  cmake --build "$dir" -j"$(nproc)" >/dev/null || cmake --build "$dir" -j1
}
