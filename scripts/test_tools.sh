#!/usr/bin/env bash
# Installs the real peers the tests drive when they are missing: PostgreSQL's binaries (the outage tests start,
# stop and restart a server of their own), Debian's Prometheus (and promtool), chromium, Node with npm, and Node's
# `ws` client.
# A tool that cannot be installed here stops `make test` with a message saying which: the tests never skip it.
# `scripts/test_tools.sh postgresql` installs only PostgreSQL's binaries (make run-cluster); `scripts/test_tools.sh
# openapi` only protoc's Swagger plugin (make openapi), from Debian's golang-grpc-gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

updated=0
apt_install() {
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "test tools: $* missing, and installing it needs root and apt-get; install it and run again" >&2
    exit 1
  fi
  if [ "$updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    updated=1
  fi
  echo "test tools: installing $* (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "${1:-}" != postgresql ]; then
  command -v protoc-gen-swagger >/dev/null || command -v protoc-gen-openapiv2 >/dev/null || apt_install golang-grpc-gateway
fi
[ "${1:-}" = openapi ] && exit 0
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_install postgresql
[ "${1:-}" = postgresql ] && exit 0
command -v prometheus >/dev/null || apt_install prometheus
# Headless chromium for the console's browser tests (tests/e2e/test_console.py drives it with Playwright).
command -v chromium >/dev/null || apt_install chromium
{ command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm
[ -d tests/e2e/node/node_modules/ws ] || npm install --silent --prefix tests/e2e/node >/dev/null
