"""The benchmark tool runs end to end and prints every figure (small numbers: a smoke
test of the tool, not a measurement -- speed is never asserted in tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIGURES = ("submit_single_per_sec", "submit_single_pipelined_per_sec", "submit_bulk_per_sec",
           "submit_bulk_pipelined_per_sec", "drain_per_sec", "round_trip", "broker_rss_mb",
           "chord_callback", "reference_redis")


@pytest.mark.slow
def test_bench_prints_every_figure_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--json", "-n", "2000", "--single-tasks", "300",
         "--latency-samples", "30", "--chord-members", "50", "--chord-samples", "3",
         "--schedules", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for name in FIGURES:
        assert name in figures, name
        if name.endswith("_per_sec"):
            assert figures[name] > 0, name
    assert figures["round_trip"]["samples"] == 30
    assert 0 < figures["round_trip"]["p50_ms"] <= figures["round_trip"]["p99_ms"]
    assert figures["chord_callback"]["members"] == 50
    assert 0 < figures["chord_callback"]["p50_ms"] <= figures["chord_callback"]["max_ms"]
    assert figures["schedules_defined"] == 200
    assert figures["drain_per_sec_with_200_schedules"] > 0
    assert figures["broker_rss_mb_with_200_schedules"] > 0


@pytest.mark.slow
def test_dashboard_bench_times_every_page():
    """python -m bench.dashboard end to end on a small store (a smoke test of the tool)."""
    import os

    if not (os.access("/usr/bin/chromium", os.X_OK) and os.access("/usr/bin/chromedriver",
                                                                 os.X_OK)):
        pytest.skip("no Chromium/chromedriver")
    out = subprocess.run([sys.executable, "-m", "bench.dashboard", "--json", "--tasks", "3000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # + rare, delayed, dead, and the 10 members of each of the 60 workflows
    assert figures["tasks_stored"] == 3000 + 20 + 100 + 200 + 60 * 10
    assert len(figures["page_ms"]) == 12 and all(ms > 0 for ms in figures["page_ms"].values())
    assert all(ms > 0 for ms in figures["api_ms"].values())
