"""The RocksDB store: opening the database, the write overlay used by apply, and reads.

Writes happen only in :mod:`broker.machine`, through an :class:`Overlay` that collects one
log entry's changes into a single WriteBatch while letting later commands of the same entry
read what earlier ones wrote. Reads for clients (get, list, depths, stats) are the functions
of :class:`Store` and go straight to RocksDB.
"""

from __future__ import annotations

import bisect
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator

import rocksdict

from broker import data_lock, keys
from taskqueue import jsonutil


class Store:
    """One RocksDB database under ``data_dir``.

    ``lock`` guards open/close/swap: rocksdict raises "Already mutably borrowed" when the
    database is closed or swapped while another thread reads it (measured on this stack).
    """

    def __init__(self, data_dir: str | os.PathLike, *, write_buffer_size: int = 64 << 20,
                 max_write_buffer_number: int = 2, block_cache_size: int = 64 << 20):
        self.path = Path(data_dir)
        self._tuning = (write_buffer_size, max_write_buffer_number, block_cache_size)
        self.lock = threading.RLock()
        self.db: rocksdict.Rdict | None = None
        self.open()

    # ----------------------------------------------------------------------- lifecycle

    def _options(self) -> rocksdict.Options:
        write_buffer_size, max_write_buffer_number, block_cache_size = self._tuning
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(write_buffer_size)
        options.set_max_write_buffer_number(max_write_buffer_number)
        options.increase_parallelism(2)
        table = rocksdict.BlockBasedOptions()
        # Every submit looks up its task id and idempotency key, which usually do not
        # exist: bloom filters answer those misses without reading SST blocks.
        table.set_bloom_filter(10, False)
        if block_cache_size:
            table.set_block_cache(rocksdict.Cache(block_cache_size))
        options.set_block_based_table_factory(table)
        # The same misses hit the memtable first, where a skiplist search costs ~2.4 us
        # per absent key; a whole-key bloom filter over the memtable (2% of its size,
        # ~1.3 MB per 64 MB memtable) answers them in ~0.6 us (measured here).
        options.set_memtable_prefix_bloom_ratio(0.02)
        options.set_memtable_whole_key_filtering(True)
        return options

    def open(self) -> None:
        with self.lock:
            # Another broker's directory: refuse before settling "its" swap (data_lock.py).
            data_lock.check_free(self.path)
            self._finish_interrupted_swap()
            created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self.db = rocksdict.Rdict(str(self.path), self._options())
            except Exception as exc:
                if created:  # a failed start leaves no empty data directory behind
                    shutil.rmtree(self.path, ignore_errors=True)
                in_use = data_lock.from_rocksdb_error(self.path, exc)
                if in_use is not None:
                    raise in_use from None
                raise

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def _finish_interrupted_swap(self) -> None:
        """Settle a :meth:`replace_with` that a crash interrupted (see there).

        ``.installing`` is never complete: dropped. ``.ready`` is complete and fsynced: if the
        database directory is missing, the crash fell between the two renames and the swap
        is finished; otherwise the swap never began and ``.ready`` is dropped. ``.old`` is the
        previous database: put back if nothing replaced it, else dropped.
        """
        installing, ready, old = (self._sibling(s) for s in (".installing", ".ready", ".old"))
        shutil.rmtree(installing, ignore_errors=True)
        if not self.path.exists():
            if ready.exists():
                os.replace(ready, self.path)
                fsync_dir(self.path.parent)
            elif old.exists():
                os.replace(old, self.path)
                fsync_dir(self.path.parent)
        shutil.rmtree(ready, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None

    def write(self, batch: rocksdict.WriteBatch, sync: bool) -> None:
        options = rocksdict.WriteOptions()
        options.sync = sync
        self.db.write(batch, options)

    def sync_wal(self) -> None:
        """fsync RocksDB's write-ahead log (everything written so far becomes power-safe)."""
        self.db.flush_wal(True)

    def checkpoint(self, target: str | os.PathLike) -> None:
        """A consistent copy of the database at ``target`` (hard links where possible)."""
        with self.lock:
            rocksdict.Checkpoint(self.db).create_checkpoint(str(target))

    def replace_with(self, source: str | os.PathLike, *, consume: bool = False) -> None:
        """Swap the database for the checkpoint at ``source`` (snapshot install), durably:
        :meth:`prepare_replacement`, then :meth:`swap_prepared`."""
        self.prepare_replacement(source, consume=consume)
        self.swap_prepared()

    def prepare_replacement(self, source: str | os.PathLike, *, consume: bool = False) -> None:
        """Stage the checkpoint at ``source`` as ``<dir>.ready``, complete and fsynced.

        It becomes ``<dir>.installing`` (moved when ``consume`` and on the same filesystem,
        else copied), every file and directory in it is fsynced, and only then is it renamed
        ``<dir>.ready`` (the parent fsynced). The open database is untouched, so this slow
        part runs while the broker keeps serving.
        """
        source = Path(source)
        installing, ready = self._sibling(".installing"), self._sibling(".ready")
        for leftover in (installing, ready):
            shutil.rmtree(leftover, ignore_errors=True)
        if consume and os.stat(source).st_dev == os.stat(self.path.parent).st_dev:
            os.replace(source, installing)
        else:
            shutil.copytree(source, installing)
        fsync_tree(installing)
        os.replace(installing, ready)
        fsync_dir(self.path.parent)

    def swap_prepared(self) -> None:
        """Put ``<dir>.ready`` in place of the database and reopen it.

        Close, rename ``<dir>`` to ``<dir>.old`` and ``<dir>.ready`` to ``<dir>``, fsync the
        parent, delete the old one. When this returns a power cut finds the new database,
        never a mix or a missing directory (which RocksDB would open as an empty database);
        :meth:`open` settles a crash at any point in between.
        """
        ready, old = self._sibling(".ready"), self._sibling(".old")
        if not ready.is_dir():
            raise FileNotFoundError(f"{ready}: nothing prepared to swap in")
        with self.lock:
            self.close()
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(ready, self.path)
            fsync_dir(self.path.parent)
            shutil.rmtree(old, ignore_errors=True)
            self.open()

    # ---------------------------------------------------------------------------- reads

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def get_json(self, key: bytes):
        raw = self.db.get(key)
        return None if raw is None else jsonutil.loads(raw)

    def scan(self, lower: bytes, upper: bytes, limit: int | None = None
             ) -> Iterator[tuple[bytes, bytes]]:
        """Key/value pairs with ``lower <= key < upper``, in key order, at most ``limit``."""
        options = rocksdict.ReadOptions()
        options.set_iterate_upper_bound(upper)
        it = self.db.iter(options)
        it.seek(lower)
        count = 0
        while it.valid():
            yield it.key(), it.value()
            count += 1
            if limit is not None and count >= limit:
                return
            it.next()

    def first_key(self, lower: bytes, upper: bytes) -> bytes | None:
        for key, _ in self.scan(lower, upper, 1):
            return key
        return None

    def applied_index(self) -> int:
        raw = self.db.get(keys.META_APPLIED)
        return 0 if raw is None else int(raw)

    def rocksdb_stats(self) -> dict:
        db = self.db
        names = {
            "estimate_num_keys": "rocksdb.estimate-num-keys",
            "total_sst_files_bytes": "rocksdb.total-sst-files-size",
            "live_sst_files_bytes": "rocksdb.live-sst-files-size",
            "memtable_bytes": "rocksdb.cur-size-all-mem-tables",
            "pending_compaction_bytes": "rocksdb.estimate-pending-compaction-bytes",
            "running_compactions": "rocksdb.num-running-compactions",
            "running_flushes": "rocksdb.num-running-flushes",
            "compaction_pending": "rocksdb.compaction-pending",
        }
        out = {}
        for name, prop in names.items():
            try:
                out[name] = db.property_int_value(prop)
            except Exception:  # a property this RocksDB build lacks
                out[name] = None
        return out


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and directory under ``root``, ``root`` itself included."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


# Only these tables are searched by range inside apply; other keys skip the sorted list.
_RANGE_PREFIXES = (keys.READY, keys.SCHEDULE, keys.LEASE, keys.PERIODIC_DUE)


class Overlay:
    """The pending writes of one log entry, readable before they are committed.

    ``get`` sees puts and deletes made earlier in the same entry; ``first`` finds the
    smallest live key in a range across both the database and the overlay. The state
    machine needs both: two submits in one entry may share an idempotency key, and a claim
    must not hand out a task that an earlier claim in the same entry already took.
    """

    __slots__ = ("store", "puts", "deleted", "_sorted", "hints", "_undo", "_cursors")

    def __init__(self, store: Store, hints: "RangeHints"):
        self.store = store
        self.puts: dict[bytes, bytes] = {}
        self.deleted: set[bytes] = set()
        self._sorted: list[bytes] = []  # keys put in this entry, sorted, for range lookups
        self.hints = hints
        self._cursors: dict[tuple[bytes, bytes], object] = {}  # (lower, upper) -> iterator
        # (key, previous put value or None, was deleted) per change, for rollback
        self._undo: list[tuple[bytes, bytes | None, bool]] = []

    def savepoint(self) -> int:
        return len(self._undo)

    def rollback(self, savepoint: int) -> None:
        """Undo every put and delete made since ``savepoint``."""
        while len(self._undo) > savepoint:
            key, previous, was_deleted = self._undo.pop()
            if previous is None:
                self.puts.pop(key, None)
            else:
                self.puts[key] = previous
            if was_deleted:
                self.deleted.add(key)
            else:
                self.deleted.discard(key)

    def release_undo(self) -> None:
        self._undo.clear()

    def get(self, key: bytes) -> bytes | None:
        value = self.puts.get(key)
        if value is not None:
            return value
        if key in self.deleted:
            return None
        return self.store.db.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        # A right-sized copy: orjson (>= 3.12) returns bytes whose buffer is over-allocated
        # (at least ~4 KB, up to 2x) and never shrunk, and the overlay holds every value of
        # the entry until it is written: a 100,000-task workflow held ~820 MB of slack.
        value = bytes(memoryview(value))
        previous = self.puts.get(key)
        self._undo.append((key, previous, key in self.deleted))
        if key[:1] in _RANGE_PREFIXES:
            if previous is None:
                bisect.insort(self._sorted, key)
            self.hints.note_insert(key)
        self.puts[key] = value
        self.deleted.discard(key)

    def put_marker(self, key: bytes) -> None:
        """Put an empty value under a key of no range index (an entry of the listing
        index): the lean path of :meth:`put`, with nothing to copy or to keep sorted."""
        self._undo.append((key, self.puts.get(key), key in self.deleted))
        self.puts[key] = b""
        self.deleted.discard(key)

    def delete(self, key: bytes) -> None:
        self._undo.append((key, self.puts.get(key), key in self.deleted))
        self.puts.pop(key, None)
        self.deleted.add(key)

    def first(self, lower: bytes, upper: bytes) -> bytes | None:
        """The smallest live key in ``[lower, upper)``.

        The database does not change while an entry is applied (its writes wait in this
        overlay), so one RocksDB iterator per range serves every lookup of the entry: it
        only ever moves forward past keys the entry deleted.
        """
        cursor = self._cursors.get((lower, upper))
        if cursor is None:
            options = rocksdict.ReadOptions()
            options.set_iterate_upper_bound(upper)
            cursor = self.store.db.iter(options)
            cursor.seek(self.hints.start(lower))
            self._cursors[(lower, upper)] = cursor
        candidate = None
        deleted = self.deleted
        while cursor.valid():
            key = cursor.key()
            if key not in deleted:
                candidate = key
                break
            cursor.next()
        ordered = self._sorted
        i = bisect.bisect_left(ordered, lower)
        while i < len(ordered):
            key = ordered[i]
            if key >= upper or (candidate is not None and key >= candidate):
                break
            if key in self.puts:
                candidate = key
                break
            i += 1
        return candidate

    def to_batch(self) -> rocksdict.WriteBatch:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key in self.deleted:
            batch.delete(key)
        for key, value in self.puts.items():
            batch.put(key, value)
        return batch


class RangeHints:
    """Where the live entries of a queue-like index begin, to skip RocksDB tombstones.

    The ready, schedule and lease indexes are consumed from the front, which leaves a run
    of deletion tombstones there until compaction; seeking from the start each time would
    step over all of them. A hint says "no live key of this range sorts before K". It is a
    cache only: it changes how far a scan skips, never what it finds, so apply stays
    deterministic. It is lowered by every insert below it and reset on snapshot install.
    """

    __slots__ = ("_hints",)

    def __init__(self):
        self._hints: dict[bytes, bytes] = {}

    @staticmethod
    def _range_of(key: bytes) -> bytes:
        prefix = key[:1]
        if prefix == keys.READY:
            return key[: key.index(b"\x00") + 1]
        return prefix

    def start(self, lower: bytes) -> bytes:
        hint = self._hints.get(self._range_of(lower))
        return hint if hint is not None and hint > lower else lower

    def consumed(self, key: bytes) -> None:
        """Everything up to and including ``key`` in its range is gone."""
        self._hints[self._range_of(key)] = key + b"\x00"

    def exhausted(self, lower: bytes, upper: bytes) -> None:
        """A scan of ``[lower, upper)`` found no live key: nothing lives below ``upper``.

        Without this, a range whose live keys are removed by other means (acks delete
        leases; nothing "consumes" them) would be re-scanned over its tombstones forever.
        """
        rng = self._range_of(lower)
        if upper[:1] == rng[:1] and upper > self._hints.get(rng, b""):
            self._hints[rng] = upper

    def note_insert(self, key: bytes) -> None:
        """A key of a range index (ready, schedule, lease) was inserted."""
        rng = self._range_of(key)
        hint = self._hints.get(rng)
        if hint is not None and key < hint:
            self._hints[rng] = key

    def clear(self) -> None:
        self._hints.clear()
