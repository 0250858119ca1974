#!/usr/bin/env bash
# Daily backup of a broker: a consistent RocksDB snapshot taken by the broker itself, tarred,
# and backups older than KEEP_DAYS removed. The deployment guide's backup.sh, with one fix:
# it tars the snapshot, not the live data directory (see "Why" below).
#
#   backup.sh [--broker-addr HOST:PORT] [--backup-dir DIR] [--keep-days N] [--keep-snapshot]
#
# Run it ON THE BROKER'S HOST (cron or a systemd timer): `tq-admin create-snapshot PATH` makes
# the broker write the checkpoint at PATH on its own filesystem, so BACKUP_DIR must be on
# that host and writable by the broker's user (taskqueue). With auth enabled, export
# TQ_API_KEY (a key with the admin permission).
#
# Environment (flags win): TQ_BROKER_ADDR (default localhost:6379), BACKUP_DIR (default
# /backups/task-queue), KEEP_DAYS (default 7), TQ_ADMIN (default: tq-admin on PATH).
# Prints the tarball's path; exit 0 on success, non-zero (with the reason on stderr) if any
# step fails, and then no partial tarball is left behind.
#
# Why not `tar -C $DATA_DIR .` as the guide has it: RocksDB keeps writing while tar reads --
# the WAL grows, compactions add and delete SST files, the MANIFEST is rewritten -- so a tar
# of the live directory is a torn copy that may not open, or may silently miss acknowledged
# writes. The snapshot is a RocksDB checkpoint, taken by the broker between two log entries:
# a point-in-time, self-consistent database (hard links to the immutable SST files, so it is
# cheap and takes seconds even for a large database).
set -euo pipefail

BROKER_ADDR="${TQ_BROKER_ADDR:-localhost:6379}"
BACKUP_DIR="${BACKUP_DIR:-/backups/task-queue}"
KEEP_DAYS="${KEEP_DAYS:-7}"
TQ_ADMIN="${TQ_ADMIN:-tq-admin}"
KEEP_SNAPSHOT=0

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --broker-addr) BROKER_ADDR="$2"; shift 2 ;;
    --backup-dir) BACKUP_DIR="$2"; shift 2 ;;
    --keep-days) KEEP_DAYS="$2"; shift 2 ;;
    --keep-snapshot) KEEP_SNAPSHOT=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "backup.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done
case "$KEEP_DAYS" in ''|*[!0-9]*) echo "backup.sh: --keep-days must be a number" >&2; exit 2 ;; esac

mkdir -p "$BACKUP_DIR"
BACKUP_DIR="$(cd "$BACKUP_DIR" && pwd)"   # absolute: the broker resolves paths from its cwd
DATE=$(date +%Y%m%d)
# A second backup on the same day gets the time too, rather than overwriting the first.
if [ -e "$BACKUP_DIR/backup-$DATE.tar.gz" ]; then DATE=$(date +%Y%m%d-%H%M%S); fi
SNAPSHOT="$BACKUP_DIR/snapshot-$DATE"
TARBALL="$BACKUP_DIR/backup-$DATE.tar.gz"
rm -rf "$SNAPSHOT"   # a leftover of an interrupted run: the broker refuses an existing path

cleanup() { rm -f "$TARBALL.tmp"; [ "$KEEP_SNAPSHOT" = 1 ] || rm -rf "$SNAPSHOT"; }
trap cleanup EXIT

# 1. A RocksDB checkpoint, written by the broker.
"$TQ_ADMIN" --broker-addr "$BROKER_ADDR" create-snapshot "$SNAPSHOT" >&2
[ -f "$SNAPSHOT/CURRENT" ] || {
  echo "backup.sh: no snapshot at $SNAPSHOT: is BACKUP_DIR on the broker's own host?" >&2
  exit 1; }

# 2. Compress the snapshot (not the live data directory); rename only when complete.
tar -czf "$TARBALL.tmp" -C "$SNAPSHOT" .
mv "$TARBALL.tmp" "$TARBALL"

# 3. Keep the last KEEP_DAYS days.
find "$BACKUP_DIR" -maxdepth 1 -name "backup-*.tar.gz" -mtime +"$KEEP_DAYS" -delete
echo "$TARBALL"
