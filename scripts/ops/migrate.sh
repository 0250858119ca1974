#!/usr/bin/env bash
# Data migration between clusters: the guide's recipe as a script. Export tasks with
# tq-admin, re-submit each one to the new cluster with POST /api/v1/tasks.
#
#   migrate.sh --from HOST:PORT --to http://new-broker:8080 [--status completed]
#              [--limit 100000] [--file tasks.json]
#   migrate.sh --export-only [--from ...] [--file tasks.json]     # just the export
#   migrate.sh --import-only --to URL --file tasks.json             # just the import
#
# What it does, and what it does not:
# - export: `tq-admin --broker-addr FROM list --status STATUS --limit N > FILE`, a JSON
#   array of task objects (the guide's command; --all-statuses exports every status);
# - import: one POST per task to TO/api/v1/tasks with the exported object as the body. The
#   broker accepts a task's read-only fields (status, result, attempts, timestamps...) and
#   ignores them: each task arrives as a NEW pending task with the SAME id, so it runs again
#   on the new cluster, and running the import twice is harmless (an id that exists answers
#   200 "duplicate" and is counted, not re-created).
# - the guide pipes `jq ... | xargs -I {} curl -d '{}'`: xargs takes the JSON's quotes as
#   its own, so {"a":1} is sent as {a:1} (a 400), and a string with an escaped quote stops
#   xargs ("unmatched double quote"). Here each object travels on its own line through
#   `curl --data-binary @-`, unchanged.
#
# Auth: TQ_API_KEY for the export (read_tasks), TQ_TARGET_API_KEY for the import
# (submit_tasks; default TQ_API_KEY). Extra curl options (TLS) in CURL_OPTS.
# Exit 0 when every task was imported (created or already there), 1 when any failed.
set -uo pipefail

FROM="${TQ_BROKER_ADDR:-127.0.0.1:6379}" TO="" STATUS="completed" LIMIT=100000
FILE="tasks.json" MODE=both TQ_ADMIN="${TQ_ADMIN:-tq-admin}"
TARGET_KEY="${TQ_TARGET_API_KEY:-${TQ_API_KEY:-}}"

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "migrate.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM="$2"; shift 2 ;;
    --to) TO="${2%/}"; shift 2 ;;
    --status) STATUS="$2"; shift 2 ;;
    --all-statuses) STATUS=""; shift ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --file) FILE="$2"; shift 2 ;;
    --export-only) MODE=export; shift ;;
    --import-only) MODE=import; shift ;;
    -h|--help) usage 0 ;;
    *) echo "migrate.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done
[ "$MODE" = export ] || [ -n "$TO" ] || die "--to http://new-broker:8080 is required"

if [ "$MODE" != import ]; then
  args=(--broker-addr "$FROM" list --limit "$LIMIT")
  [ -z "$STATUS" ] || args+=(--status "$STATUS")
  "$TQ_ADMIN" "${args[@]}" >"$FILE.tmp" || { rm -f "$FILE.tmp"; die "export failed"; }
  mv "$FILE.tmp" "$FILE"
  echo "exported $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$FILE") tasks to $FILE" >&2
  [ "$MODE" = export ] && exit 0
fi
[ -f "$FILE" ] || die "$FILE: no such file"

# One compact JSON object per line: jq when installed, python3 otherwise.
one_per_line() {
  if command -v jq >/dev/null 2>&1; then jq -c '.[]' "$FILE"
  else python3 -c 'import json,sys
for task in json.load(open(sys.argv[1])): print(json.dumps(task, separators=(",", ":")))' "$FILE"
  fi
}

headers=(-H "Content-Type: application/json")
[ -z "$TARGET_KEY" ] || headers+=(-H "Authorization: Bearer $TARGET_KEY")
created=0 existing=0 failed=0
reply="$(mktemp)"
while IFS= read -r task; do
  [ -n "$task" ] || continue
  # shellcheck disable=SC2086  # CURL_OPTS is a list of options
  code=$(printf '%s' "$task" | curl -s -o "$reply" -w '%{http_code}' ${CURL_OPTS:-} \
           -X POST "$TO/api/v1/tasks" "${headers[@]}" --data-binary @-)
  case "$code" in
    201) created=$((created + 1)) ;;
    200) existing=$((existing + 1)) ;;
    *) failed=$((failed + 1))
       echo "failed ($code): $(head -c 300 "$reply" 2>/dev/null) for ${task:0:120}" >&2 ;;
  esac
done < <(one_per_line)
rm -f "$reply"
echo "imported into $TO: $created created, $existing already there, $failed failed" >&2
[ "$failed" -eq 0 ]
