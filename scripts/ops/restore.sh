#!/usr/bin/env bash
# Restore a broker's data directory from a backup made by backup.sh. The guide's procedure
# (stop, restore, start) made safe:
#
#   restore.sh [--data-dir DIR | --config FILE]
#              [--service UNIT | --stop-cmd CMD --start-cmd CMD | --no-service]
#              [--owner USER:GROUP] BACKUP.tar.gz
#
#   1. checks the tarball is a whole RocksDB snapshot (CURRENT and MANIFEST inside);
#   2. stops the broker: `systemctl stop UNIT` (default task-queue-broker), or --stop-cmd,
#      or nothing with --no-service (the operator stopped it); then waits until no process
#      holds the database's lock -- it never touches a database a broker has open;
#   3. moves the current data directory aside to DIR.before-restore-TIMESTAMP (delete it
#      once the restored broker is verified) and unpacks the backup into an empty DIR --
#      never over the old files: the old WAL and MANIFEST mixed with the backup's SST files
#      would not be the backup, and could be a corrupt database;
#   4. gives the files the old directory's owner (or --owner), then starts the broker
#      (`systemctl start UNIT`, or --start-cmd; nothing with --no-service).
#
# Defaults: DIR /var/lib/task-queue (env DATA_DIR), UNIT task-queue-broker (env TQ_SERVICE).
#
# --config FILE (the broker's configuration; required for a Raft node, where DIR.raft
# exists): steps 3-4 are done by `tq-broker --config FILE --restore BACKUP` (env TQ_BROKER,
# default tq-broker on PATH), which also moves the Raft journal aside and re-bases the log.
# A cluster is restored by running this on EVERY node with the SAME archive, all brokers
# stopped before the first one starts (docs/operations.md). A single node that lost its
# data within a healthy cluster is not restored: wipe it and let it catch up from its peers.
set -euo pipefail

DATA_DIR="${DATA_DIR:-/var/lib/task-queue}"
SERVICE="${TQ_SERVICE:-task-queue-broker}"
TQ_BROKER="${TQ_BROKER:-tq-broker}"
STOP_CMD="" START_CMD="" NO_SERVICE=0 OWNER="" TARBALL="" CONFIG=""

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "restore.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --service) SERVICE="$2"; shift 2 ;;
    --stop-cmd) STOP_CMD="$2"; shift 2 ;;
    --start-cmd) START_CMD="$2"; shift 2 ;;
    --no-service) NO_SERVICE=1; shift ;;
    --owner) OWNER="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "restore.sh: unknown option: $1" >&2; usage 2 >&2 ;;
    *) [ -z "$TARBALL" ] || die "one backup file, please"; TARBALL="$1"; shift ;;
  esac
done
[ -n "$TARBALL" ] || { echo "restore.sh: which backup? (BACKUP.tar.gz)" >&2; usage 2 >&2; }
[ -f "$TARBALL" ] || die "$TARBALL: no such file"
DATA_DIR="${DATA_DIR%/}"
if [ -n "$CONFIG" ]; then
  [ -f "$CONFIG" ] || die "$CONFIG: no such configuration file"
  "$TQ_BROKER" --check-config "$CONFIG" >/dev/null || die "$CONFIG: invalid configuration"
  DATA_DIR=""   # tq-broker takes persistence.data_dir from the configuration
fi
[ -n "$CONFIG" ] || [ ! -e "$DATA_DIR.raft" ] || die "$DATA_DIR.raft exists: this is a Raft \
cluster node. To restore the whole cluster from this backup, stop every broker and run \
restore.sh --config /etc/task-queue/NODE.yaml with the same archive on every node. A single \
node that lost its data in a healthy cluster is not restored: wipe it and let it catch up \
from its peers (docs/operations.md)."

if [ -n "$DATA_DIR" ] && command -v mountpoint >/dev/null 2>&1 && mountpoint -q "$DATA_DIR"; then
  die "$DATA_DIR is a mount point (a container volume?): it cannot be moved aside. Run the \
restore where the volume's folder is an ordinary directory (the host's ./data for \
docker-compose.yml), with the broker container stopped."
fi

# 1. A whole snapshot?
listing="$(tar -tzf "$TARBALL")" || die "$TARBALL: not a readable .tar.gz"
grep -qx './CURRENT' <<<"$listing" || die "$TARBALL: no RocksDB CURRENT file: not a backup.sh backup"
grep -q '^\./MANIFEST-' <<<"$listing" || die "$TARBALL: no RocksDB MANIFEST: incomplete backup"

# 2. Stop the broker, and wait until its database is closed.
if [ "$NO_SERVICE" = 0 ]; then
  if [ -n "$STOP_CMD" ]; then
    echo "stopping the broker: $STOP_CMD" >&2; bash -c "$STOP_CMD"
  else
    echo "stopping the broker: systemctl stop $SERVICE" >&2; systemctl stop "$SERVICE"
  fi
fi
# A service takes a moment to exit; with --no-service it should be down already.
if [ "$NO_SERVICE" = 1 ]; then tries=4; else tries=60; fi

if [ -n "$CONFIG" ]; then
  # 3-4 by the broker itself: it refuses while the database is open, changes nothing then.
  for _ in $(seq 1 "$tries"); do
    if out="$("$TQ_BROKER" --config "$CONFIG" --restore "$TARBALL" 2>&1)"; then
      printf '%s\n' "$out" >&2; restored=1; break
    fi
    case "$out" in *"LOCK held"*) sleep 0.5 ;; *) printf '%s\n' "$out" >&2; die "tq-broker --restore failed; see above" ;; esac
  done
  [ "${restored:-0}" = 1 ] || { printf '%s\n' "$out" >&2; die "a process still has the database open (is the broker stopped?); nothing changed"; }
  if [ -n "$OWNER" ] && [ "$(id -u)" -eq 0 ]; then
    data="$(sed -n 's/^restored .* into \(.*\): [0-9]* tasks.*/\1/p' <<<"$out")"
    [ -z "$data" ] || chown -R "$OWNER" "$data"
  fi
else
db_in_use() {
  # RocksDB holds an fcntl lock on DIR/LOCK while a process has the database open.
  [ -f "$DATA_DIR/LOCK" ] || return 1
  if ! command -v python3 >/dev/null 2>&1; then
    echo "restore.sh: no python3 to test the database lock; trusting that the broker is stopped" >&2
    return 1
  fi
  python3 - "$DATA_DIR/LOCK" <<'PY'
import fcntl, sys
with open(sys.argv[1], "r+") as f:
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)  # in use
sys.exit(1)
PY
}
for _ in $(seq 1 "$tries"); do db_in_use || break; sleep 0.5; done
! db_in_use || die "a process still has $DATA_DIR open (is the broker stopped?); nothing changed"

# 3. Set the current data aside, unpack the backup into an empty directory.
if [ -z "$OWNER" ] && [ -d "$DATA_DIR" ]; then OWNER="$(stat -c '%u:%g' "$DATA_DIR")"; fi
ASIDE=""
if [ -e "$DATA_DIR" ]; then
  ASIDE="$DATA_DIR.before-restore-$(date +%Y%m%d-%H%M%S)"
  mv "$DATA_DIR" "$ASIDE"
  echo "previous data moved to $ASIDE" >&2
fi
mkdir -p "$DATA_DIR"
if ! tar -xzf "$TARBALL" -C "$DATA_DIR"; then
  rm -rf "$DATA_DIR"; [ -z "$ASIDE" ] || mv "$ASIDE" "$DATA_DIR"
  die "unpacking $TARBALL failed; the previous data is back in place"
fi
# 4. Owner, then start.
if [ -n "$OWNER" ] && [ "$(id -u)" -eq 0 ]; then chown -R "$OWNER" "$DATA_DIR"; fi
echo "restored $TARBALL into $DATA_DIR" >&2
fi
if [ "$NO_SERVICE" = 0 ]; then
  if [ -n "$START_CMD" ]; then
    echo "starting the broker: $START_CMD" >&2; bash -c "$START_CMD"
  else
    echo "starting the broker: systemctl start $SERVICE" >&2; systemctl start "$SERVICE"
  fi
fi
