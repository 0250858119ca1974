#!/usr/bin/env bash
# Health check for load balancers (HAProxy external-check, keepalived, cron): the guide's
# health-check.sh. Exit 0 only when the broker's GET /health answers {"status": "healthy"}
# -- the node is up and knows a leader; 1 otherwise (down, stopping, no leader, no answer).
#
#   health-check.sh [--leader] [--timeout SECS] [-v] [URL]
#
# URL defaults to http://localhost:8080/health (env TQ_HEALTH_URL). --leader checks
# /health/leader instead and exits 0 only on the leader (for a write-only backend).
# jq is used when installed, python3 otherwise. Extra curl options (TLS: --cacert CA.crt)
# go in CURL_OPTS.
set -uo pipefail

URL="${TQ_HEALTH_URL:-http://localhost:8080/health}"
TIMEOUT=3 WANT=healthy VERBOSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --leader) WANT=leader; shift ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    -v|--verbose) VERBOSE=1; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) URL="$1"; shift ;;
  esac
done
if [ "$WANT" = leader ]; then URL="${URL%/health}/health/leader"; fi

# shellcheck disable=SC2086  # CURL_OPTS is a list of options
BODY=$(curl -s --max-time "$TIMEOUT" ${CURL_OPTS:-} "$URL" 2>/dev/null)
if command -v jq >/dev/null 2>&1; then
  STATUS=$(printf '%s' "$BODY" | jq -r '.status' 2>/dev/null)
else
  STATUS=$(printf '%s' "$BODY" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("status", ""))
except Exception: pass' 2>/dev/null)
fi
[ "$VERBOSE" = 1 ] && echo "${STATUS:-no answer} ($URL)"

if [ "$STATUS" == "$WANT" ]; then
    exit 0
else
    exit 1
fi
