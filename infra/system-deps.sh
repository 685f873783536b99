#!/usr/bin/env bash
# Installs the system tools shoplake runs on when they are missing: Java 17+ and Maven
# (for the Kafka broker resolved from Maven Central). PostgreSQL is installed on demand
# by `shoplake postgres install`. Needs root (or sudo) only when something is missing.
#
#   infra/system-deps.sh          what `make demo` needs
#   infra/system-deps.sh --test   also what `make test` checks with: promtool, amtool and a
#                                 browser (Debian's prometheus, prometheus-alertmanager, chromium)
set -euo pipefail

need=()
java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null
}
java_ok || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ "${1:-}" = "--test" ]; then
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)  # dashboards in a real browser
fi

[ ${#need[@]} -eq 0 ] && exit 0

echo "shoplake: installing system packages: ${need[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing ${need[*]} and apt-get is not available; install Java 17+ and Maven by hand." >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
