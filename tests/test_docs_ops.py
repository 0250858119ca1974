"""The operator's guide names real things: metrics the broker exports, scripts that exist,
log lines the code writes, and links to pages (or pages being written) in docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPS = (ROOT / "docs" / "operations.md").read_text()
SOURCES = "\n".join(p.read_text() for d in ("broker", "worker", "admin")
                    for p in (ROOT / d).rglob("*.py"))


def test_every_metric_named_is_exported():
    metrics_src = (ROOT / "broker" / "api" / "metrics.py").read_text()
    names = set(re.findall(r"\btq_[a-z_]+\b", OPS))
    assert "tq_tasks_pending" in names and "tq_workers_connected" in names
    for name in names:
        if name.startswith("tq_rocksdb_"):
            continue  # built from RocksDB property names at scrape time
        dynamic = re.match(r"tq_raft_(term|commit_index|applied_index)$", name)
        if dynamic:  # f"tq_raft_{key}" from the node's status
            assert 'f"tq_raft_{key}"' in metrics_src and f'"{dynamic[1]}"' in metrics_src
            continue
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{base}"' in metrics_src or f'"{name}"' in metrics_src, name


def test_scripts_and_files_named_exist():
    for path in set(re.findall(r"\b(scripts/[\w/.-]+\.sh|docker-compose[\w.]*\.yml|"
                               r"docker/cluster/node\d\.yaml)", OPS)):
        assert (ROOT / path).exists(), path


def test_quoted_log_lines_are_the_codes():
    lines = re.findall(r"`(?:INFO|WARNING|ERROR|CRITICAL) (tq\.[a-z.]+):? ([^`]+)`", OPS)
    assert len(lines) >= 10
    for logger, message in lines:
        assert f'getLogger("{logger}")' in SOURCES, logger
        # "cannot start: %s" quotes a startup error's own message: check that message's words
        if message.startswith("cannot start: ") and '"cannot start: %s"' in SOURCES:
            message = message[len("cannot start: "):]
            if leading_words(message) == "":
                continue  # an OS error's text ([Errno 98] ...), not ours
        words = leading_words(message)
        assert words and words in SOURCES, (logger, words)


def leading_words(message: str) -> str:
    """A quoted log message's leading words, up to its first variable part."""
    words = re.split(r"[\d'([]|\.\.\.|\b(?:N|M|T|ID)\b|w1-|web1|node1|POST |10\.0|127\.0|0\.0\.0"
                     r"|/var/", message)[0]
    return words.strip().rstrip(":").strip()
