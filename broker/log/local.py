"""Single-node log: group commit into RocksDB, with the fsync policy of wal_sync_interval_ms.

Proposals queue up while the previous entry is being written; the commit loop then takes
all of them (up to ``max_batch``) as one entry: one apply, one WriteBatch, at most one fsync.
Under load that turns thousands of client writes into a handful of RocksDB writes per
second of fsync latency, which is where throughput comes from without weakening durability.

Durability contract (``wal_sync_interval_ms``):

* ``0`` — every entry is written with ``sync=True`` before any of its results is returned:
  an acknowledged write survives a power cut.
* ``N > 0`` — entries are written to RocksDB's WAL without fsync (the data is in the OS page
  cache the moment the write returns, so a killed process loses nothing) and the WAL is
  fsynced at most every N ms: a power cut can lose up to N ms of acknowledged writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from broker.log.base import GroupCommitLog, Unavailable, deliver
from broker.machine import StateMachine
from broker.restore import restore_identity, restored_from
from broker.store import Store

log = logging.getLogger("tq.log.local")


class LocalLog(GroupCommitLog):
    def __init__(self, machine: StateMachine, store: Store, *, node_id: str, address: str,
                 sync_interval_ms: int, max_batch: int = 2000):
        super().__init__(machine)
        self.store = store
        self.node_id = node_id
        self.address = address
        self.sync_interval_ms = sync_interval_ms
        self.max_batch = max_batch
        self._io = ThreadPoolExecutor(1, thread_name_prefix="tq-fsync")
        self._unsynced = False
        self._commit_scheduled = False
        self.restored = restore_identity(restored_from(store))  # Mrestored, if any

    async def start(self) -> None:
        if self.sync_interval_ms == 0:
            self._start_task(self._commit_loop(), "tq-commit")
        else:
            self._start_task(self._sync_loop(), "tq-wal-sync")

    def _schedule_commit(self) -> None:
        if self.sync_interval_ms == 0:
            self._wakeup.set()
        elif not self._commit_scheduled:
            # No fsync to wait for: commit in a plain callback at the end of this loop turn,
            # by which time every request read in this turn has proposed (same group commit
            # as the task loop, without its event/future/task hand-offs per entry).
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_now)

    def _apply_next_entry(self) -> tuple[list, list, object] | None:
        """Take up to max_batch queued proposals as the next entry and apply it.

        An exception out of apply (a bug: apply_entry turns each command's errors into its
        result) fails this entry's proposals and leaves the loop running; None then."""
        taken = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        self.in_flight = len(taken)
        try:
            results, batch = self.machine.apply_entry(
                self.machine.applied_index + 1, [item[0] for item in taken])
        except Exception as exc:
            log.error("applying an entry of %d commands failed; they are failed", len(taken),
                      exc_info=True)
            try:  # memory may hold part of it: back to what RocksDB has
                self.machine.load()
            except Exception:
                log.critical("reloading the state machine failed; exiting", exc_info=True)
                logging.shutdown()
                os._exit(70)
            self._fail(taken, Unavailable(f"internal error applying it: "
                                          f"{type(exc).__name__}; not committed"))
            self.in_flight = 0
            self.progress_at = time.monotonic()
            return None
        return taken, results, batch

    def _commit_now(self) -> None:
        self._commit_scheduled = False
        while self._queue:
            applied = self._apply_next_entry()
            if applied is None:
                continue
            taken, results, batch = applied
            try:
                self.store.write(batch, False)
            except Exception:
                log.critical("RocksDB write failed; exiting", exc_info=True)
                asyncio.get_running_loop().stop()
                raise
            self._unsynced = True
            self._deliver(taken, results)

    def _deliver(self, taken: list, results: list) -> None:
        self.in_flight = 0
        self.progress_at = time.monotonic()
        try:
            self.on_applied(self.machine.woken)
            if self.machine.finished:
                self.on_finished(self.machine.finished)
        except Exception:  # waking fetches and waiters is best effort; results must go out
            log.exception("on_applied failed")
        for (_, sink, slot), result in zip(taken, results):
            deliver(sink, slot, result)

    async def stop(self) -> None:
        await self._stop_proposals()
        if self._unsynced:
            self.store.sync_wal()
        self._io.shutdown(wait=True)

    async def _commit_loop(self) -> None:
        """wal_sync_interval_ms 0: entries wait for their fsync, so the loop is a task."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                applied = self._apply_next_entry()
                if applied is None:
                    continue
                taken, results, batch = applied
                try:
                    # fsync off the loop: new proposals keep queueing meanwhile and form
                    # the next group.
                    await loop.run_in_executor(self._io, self.store.write, batch, True)
                except Exception:
                    # The machine's memory is ahead of the disk now; continuing could
                    # acknowledge writes that are not stored. Stop hard, restart recovers.
                    log.critical("RocksDB write failed; exiting", exc_info=True)
                    loop.stop()
                    raise
                self._deliver(taken, results)

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sync_interval_ms / 1000.0)
            if self._unsynced:
                self._unsynced = False
                await loop.run_in_executor(self._io, self.store.sync_wal)

    def is_leader(self) -> bool:
        return True

    def leader_address(self) -> str | None:
        return self.address

    def status(self) -> dict:
        index = self.machine.applied_index
        node = {"node_id": self.node_id, "address": self.address, "role": "leader",
                "term": 0, "commit_index": index, "applied_index": index, "lag": 0,
                "reachable": True, "restored": self.restored}
        return {"mode": "single", "node_id": self.node_id, "role": "leader",
                "leader": self.address, "leader_id": self.node_id, "term": 0,
                "commit_index": index, "applied_index": index, "restored": self.restored,
                "restore_mismatch": False, "caught_up": True, "nodes": [node]}

    async def snapshot(self, path: str) -> int:
        # Taken between entries on the loop thread: the checkpoint holds whole entries only.
        index = self.machine.applied_index
        await asyncio.get_running_loop().run_in_executor(self._io, self.store.checkpoint, path)
        return index

