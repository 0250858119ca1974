"""Is a backup.sh archive a whole RocksDB checkpoint? Run on a broker with the release's python
(it has rocksdict): /opt/task-queue/current/bin/python tq_checkpoint_check.py ARCHIVE [MIN_TASKS]

Unpacks the archive into a temporary directory, checks CURRENT names a MANIFEST that is in the
archive, opens the database read-only (RocksDB checks that every SST file the MANIFEST lists
is there, with its size), reads the applied index and counts the task records.
Prints one JSON object; exit 0 when the checkpoint opens, has an applied index and at least
MIN_TASKS tasks.
"""
import json
import os
import sys
import tarfile
import tempfile

import rocksdict


def check(archive, min_tasks):
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(tmp, filter="data")
            except TypeError:  # a Python without extraction filters
                tar.extractall(tmp)
        files = sorted(os.listdir(tmp))
        with open(os.path.join(tmp, "CURRENT")) as fh:
            manifest = fh.read().strip()
        result = {"archive": archive, "files": len(files), "manifest": manifest,
                  "manifest_present": manifest in files,
                  "options_present": any(f.startswith("OPTIONS-") for f in files),
                  "sst_files": sum(f.endswith(".sst") for f in files)}
        db = rocksdict.Rdict(tmp, rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            raw = db.get(b"Mapplied")
            result["applied_index"] = int(raw) if raw is not None else 0
            tasks = 0
            it = db.iter()
            it.seek(b"T")
            while it.valid() and it.key()[:1] == b"T":
                tasks += 1
                it.next()
            result["tasks"] = tasks
        finally:
            db.close()
    result["ok"] = (result["manifest_present"] and result["options_present"]
                    and result["applied_index"] > 0 and result["tasks"] >= min_tasks)
    return result


def main(argv):
    try:
        result = check(argv[1], int(argv[2]) if len(argv) > 2 else 1)
    except Exception as exc:  # a broken archive: say why
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
