#!/usr/bin/env bash
# Installs every Debian 12 package that moe-cluster's build, tests and demo need.
# Idempotent and non-interactive; works as root or through sudo.
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin openssh-client
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libsentencepiece-dev nlohmann-json3-dev libhwy-dev libboost-dev libssl-dev
  prometheus
  python3 python3-numpy python3-grpcio python3-protobuf python3-matplotlib python3-venv python3-wheel
  python3-lxml python3-yaml python3-dateutil python3-tz python3-six python3-setuptools
  procps openssl curl
  iproute2 slurmctld slurmd slurm-client munge
  clang libclang-rt-14-dev
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-deps.sh: not root and sudo is missing; run it as root" >&2
    exit 1
  fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
