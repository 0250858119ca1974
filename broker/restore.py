"""Offline restore of a backup (``tq-broker --config FILE --restore BACKUP``), and the start-up
guard that keeps a Raft node from running on a database its journal does not describe.

A backup (``scripts/ops/backup.sh``, ``tq-admin create-snapshot``) is a RocksDB checkpoint. Its
``Mapplied`` meta key holds the log index it was taken at. A single node continues its local
log from that index, so the checkpoint is restored as it is. A Raft node cannot: a restored
cluster starts new, empty journals whose indexes count from 1 again, and apply skips every
entry at or below the stored index (they look already applied), so the restored cluster
would silently drop writes. For a Raft configuration the restore therefore *re-bases* the
checkpoint: the applied index becomes 0, and the new log starts over on the same state on
every node. That is only correct when EVERY node of the cluster is restored from the SAME
archive while all of them are stopped (docs/operations.md, "Restoring a cluster").

Where the data came from is kept in the meta key ``Mrestored``: the backup's original
applied index, the archive's sha256 and the backup's time (the newest file time inside it).
Nothing in it depends on the restoring host or the time of the restore, so the nodes of a
cluster restored from one archive hold identical databases.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import time
from pathlib import Path

from broker import keys
from broker.config import Config
from broker.store import fsync_dir, fsync_tree

log = logging.getLogger("tq.restore")

META_RESTORED = keys.META_RESTORED


class RestoreError(Exception):
    """The restore was refused or failed; nothing was changed unless the message says so."""


class StartupRefused(Exception):
    """The broker must not start on this data (the message says what to run)."""


def raft_dir_of(data_dir: str | os.PathLike) -> Path:
    data_dir = Path(data_dir)
    return data_dir.with_name(data_dir.name + ".raft")


def journal_is_fresh(raft_dir: Path) -> bool:
    """No journal and no snapshot yet: the Raft log of this node will start at index 1."""
    return not (raft_dir / "journal").exists() and not (raft_dir / "snapshot.tar").exists()


def check_raft_start(config: Config, applied_index: int) -> None:
    """Start-up guard of a Raft node: refuse a database with an applied index but no journal.

    Such a database is a backup or a single-node data directory put in place by hand; the
    new journal would count from 1 and every entry up to ``applied_index`` would be skipped.
    """
    if not config.raft.enabled or applied_index <= 0:
        return
    data_dir = Path(config.persistence.data_dir)
    raft_dir = raft_dir_of(data_dir)
    if not journal_is_fresh(raft_dir):
        return
    source = config.source if config.source != "<defaults>" else "FILE"
    raise StartupRefused(
        f"{data_dir} holds a database at applied index {applied_index} but {raft_dir} has no "
        f"Raft journal: it is a backup or a single-node data directory, and a new Raft log "
        f"starting at index 1 would skip entries 1..{applied_index} (new writes would be "
        f"lost). Stop every broker of the cluster and run `tq-broker --config {source} "
        f"--restore BACKUP` on EVERY node with the SAME backup (a backup.sh archive, or this "
        f"directory after moving it away), then start them all (docs/operations.md, "
        f"Restoring a cluster). To run it as a single node instead, set raft.enabled: false.")


# ------------------------------------------------------------------------------ checks

def db_in_use(data_dir: Path) -> bool:
    """True when a process holds RocksDB's lock on ``data_dir`` (the database is open)."""
    lock = data_dir / "LOCK"
    if not lock.is_file():
        return False
    with open(lock, "r+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(f, fcntl.LOCK_UN)
    return False


def _safe_name(name: str) -> str | None:
    """The member's path relative to the archive root, or None for the root itself.

    Raises RestoreError for absolute paths and ``..`` components."""
    if name.startswith("/") or "\\" in name:
        raise RestoreError(f"unsafe path in the archive: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise RestoreError(f"unsafe path in the archive: {name!r}")
    return "/".join(parts) or None


def _check_checkpoint_files(names: set[str], where: str) -> None:
    if "CURRENT" not in names:
        raise RestoreError(f"{where}: no RocksDB CURRENT file: not a backup "
                           "(backup.sh archive or create-snapshot directory)")
    if not any(n.startswith("MANIFEST-") for n in names):
        raise RestoreError(f"{where}: no RocksDB MANIFEST: incomplete backup")


def _unpack_archive(archive: Path, target: Path) -> float:
    """Unpack ``archive`` into the empty directory ``target``; return the newest file time.

    Only regular files and directories, with relative paths that stay inside ``target``."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise RestoreError(f"{archive}: not a readable tar archive ({exc})") from None
    newest = 0.0
    with tar:
        members = []
        top = set()
        for member in tar.getmembers():
            rel = _safe_name(member.name)
            if member.isdir():
                if rel is not None:
                    members.append((rel, member))
                continue
            if not member.isfile():
                raise RestoreError(f"{archive}: {member.name!r} is not a regular file or "
                                   "directory (links and devices are refused)")
            if rel is None:
                raise RestoreError(f"{archive}: unnamed file in the archive")
            members.append((rel, member))
            if "/" not in rel:
                top.add(rel)
            newest = max(newest, float(member.mtime))
        _check_checkpoint_files(top, str(archive))
        for rel, member in members:
            dest = target / rel
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            with source, open(dest, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    return newest


def _copy_directory(source: Path, target: Path) -> float:
    """Copy a checkpoint directory (regular files and directories only) into ``target``."""
    top = {p.name for p in source.iterdir()}
    _check_checkpoint_files(top, str(source))
    newest = 0.0
    for root, dirs, files in os.walk(source):
        rel_root = Path(root).relative_to(source)
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                raise RestoreError(f"{source}: {rel_root / name} is a symbolic link")
            (target / rel_root / name).mkdir(parents=True, exist_ok=True)
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise RestoreError(f"{source}: {rel_root / name} is not a regular file")
            newest = max(newest, st.st_mtime)
            shutil.copyfile(path, target / rel_root / name)
    return newest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for root, dirs, files in sorted(os.walk(path)):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, path).encode() + b"\x00")
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


# ----------------------------------------------------------------------------- restore

def restore(config: Config, backup: str | os.PathLike, *, stamp: str | None = None) -> dict:
    """Replace this node's data with ``backup`` (a backup.sh .tar.gz or a checkpoint directory).

    The broker must be stopped (RocksDB's LOCK free). The current data directory and its
    ``.raft`` journal directory are moved aside to ``*.before-restore-STAMP`` (never deleted).
    With ``raft.enabled`` the applied index is reset to 0 (see the module docstring).
    Returns a summary dict.
    """
    import rocksdict

    backup = Path(backup)
    if not backup.exists():
        raise RestoreError(f"{backup}: no such file or directory")
    data_dir = Path(config.persistence.data_dir).absolute()
    raft_dir = raft_dir_of(data_dir)
    raft = config.raft.enabled
    if db_in_use(data_dir):
        raise RestoreError(f"a process has {data_dir} open (RocksDB LOCK held): stop the "
                           "broker first; nothing changed")
    if data_dir.is_mount():
        raise RestoreError(f"{data_dir} is a mount point: it cannot be moved aside; restore "
                           "where it is an ordinary directory; nothing changed")
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    parent = data_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f"{data_dir.name}.restoring-{stamp}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    if data_dir.is_dir():
        os.chmod(staging, stat.S_IMODE(data_dir.stat().st_mode))
    try:
        if backup.is_dir():
            newest = _copy_directory(backup, staging)
        else:
            newest = _unpack_archive(backup, staging)
        digest = _sha256(backup)
        try:
            db = rocksdict.Rdict(str(staging), rocksdict.Options(raw_mode=True))
        except Exception as exc:
            raise RestoreError(f"{backup}: does not open as a RocksDB database ({exc})") from None
        try:
            raw = db.get(keys.META_APPLIED)
            original = 0 if raw is None else int(raw)
            tasks = 0
            it = db.iter()
            it.seek(keys.TASK)
            while it.valid() and it.key()[:1] == keys.TASK:
                tasks += 1
                it.next()
            record = {"backup_applied_index": original, "backup_sha256": digest,
                      "backup_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(newest))
                      if newest else None,
                      "rebased": bool(raft)}
            batch = rocksdict.WriteBatch(raw_mode=True)
            batch.put(META_RESTORED, json.dumps(record, sort_keys=True).encode())
            # a backup of a cluster that was itself restored carries its log's record of
            # that restore: this restore is a new base, not yet recorded in any log
            batch.delete(keys.META_RESTORE_LOGGED)
            if raft:
                batch.put(keys.META_APPLIED, b"0")
            options = rocksdict.WriteOptions()
            options.sync = True
            db.write(batch, options)
            db.flush(True)
        finally:
            db.close()
        fsync_tree(staging)
        if os.geteuid() == 0:
            owner = data_dir if data_dir.exists() else parent
            st = owner.stat()
            _chown_tree(staging, st.st_uid, st.st_gid)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    moved = []
    try:
        for path in (data_dir, raft_dir):
            if path.exists() or path.is_symlink():
                aside = path.with_name(f"{path.name}.before-restore-{stamp}")
                os.replace(path, aside)
                moved.append((path, aside))
        os.replace(staging, data_dir)
        fsync_dir(parent)
    except BaseException:
        for path, aside in reversed(moved):
            if not path.exists():
                os.replace(aside, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"data_dir": str(data_dir), "raft": bool(raft), "tasks": tasks,
            "backup_applied_index": original, "applied_index": 0 if raft else original,
            "moved_aside": [str(aside) for _, aside in moved], **record}


def restored_from(store) -> dict | None:
    """The ``Mrestored`` record of an open store, if this database came from a restore."""
    raw = store.get(META_RESTORED)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# ------------------------------------------------------------------- restore identity

def restore_identity(record: dict | None) -> dict | None:
    """What a node reports about where its database came from (cluster status, metrics):
    ``{"backup_sha256", "backup_applied_index", "backup_time"}`` of its ``Mrestored``
    record, or None for a database that was never restored.

    It is a property of the data, not of the node: a snapshot a leader installs on a
    follower carries the leader's record, so a cluster restored from one archive (and any
    node caught up from it by snapshot) reports one identity everywhere."""
    if not isinstance(record, dict):
        return None
    return {"backup_sha256": record.get("backup_sha256"),
            "backup_applied_index": record.get("backup_applied_index"),
            "backup_time": record.get("backup_time")}


def identity_key(identity: dict | None) -> tuple | None:
    """The part of an identity that must agree across a cluster (archive and its index)."""
    if not isinstance(identity, dict):
        return None
    return (identity.get("backup_sha256"), identity.get("backup_applied_index"))


def identities_disagree(nodes: list[dict]) -> bool:
    """True when the reachable nodes that reported a restore identity do not all report the
    same one (a node not restored next to restored ones counts: None is an identity too).
    Nodes that are unreachable, or never reported the field, are left out."""
    seen = {identity_key(n.get("restored")) for n in nodes
            if n.get("reachable") and "restored" in n}
    return len(seen) > 1
