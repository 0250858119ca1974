"""The set-up scripts as a newcomer meets them (issue 11): quiet installs, honest readiness.

apt_install runs against stand-ins for apt-get and dpkg on PATH (the real ones would change
this machine); the quickstart runs for real beside another broker that holds its port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskqueue.client import Client
from tests.brokerproc import BrokerProcess

ROOT = Path(__file__).resolve().parent.parent


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_apt_install_is_quiet_and_installs_no_recommends(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake_tool(bin_dir, "dpkg", 'case "$2" in installed-pkg) exit 0;; esac; exit 1\n')
    # As noisy as the real one: dpkg prints hundreds of lines per install.
    fake_tool(bin_dir, "apt-get", f'echo "$*" >> {calls}\n'
              'i=0; while [ $i -lt 300 ]; do echo "Unpacking thing-$i ..."; '
              'i=$((i+1)); done\n')
    fake_tool(bin_dir, "sudo", 'exec "$@"\n')  # when not run as root
    log = tmp_path / "setup.log"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TQ_SETUP_LOG=str(log))
    out = subprocess.run(
        ["bash", "-c", "source scripts/lib.sh && apt_install installed-pkg new-a new-b "
         "&& apt_install new-c"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60)
    assert out.returncode == 0, out.stderr
    update, first, second = calls.read_text().splitlines()
    assert update.startswith("update")  # once per run, not once per apt_install
    for install in (first, second):
        assert "install" in install and "--no-install-recommends" in install
        assert "-qq" in install and "-y" in install
    assert "new-a new-b" in first and "installed-pkg" not in first
    # One progress line per step on the terminal; the noise in the log.
    terminal = (out.stdout + out.stderr).splitlines()
    assert len(terminal) == 3, terminal
    assert "Unpacking" not in out.stdout + out.stderr
    assert log.read_text().count("Unpacking") == 900


def test_a_failing_apt_install_shows_the_end_of_its_log(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "dpkg", "exit 1\n")
    fake_tool(bin_dir, "apt-get", 'echo "E: Unable to locate package $5"; exit 100\n')
    fake_tool(bin_dir, "sudo", 'exec "$@"\n')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               TQ_SETUP_LOG=str(tmp_path / "setup.log"), _TQ_APT_UPDATED="1")
    out = subprocess.run(["bash", "-c", "source scripts/lib.sh && apt_install nosuchpkg"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "failed: installing nosuchpkg" in out.stderr
    assert "Unable to locate package" in out.stderr


@pytest.mark.slow
def test_the_quickstart_refuses_to_demo_against_another_broker(tmp_path):
    """Another broker holds the quickstart's protocol port: ours dies ("address already in
    use") and the quickstart says so instead of running its demo against the other one."""
    other = BrokerProcess(tmp_path / "other", name="other").start()
    try:
        env = dict(os.environ, TQ_VENV=str(Path(sys.executable).parent.parent),
                   TQ_BROKER_ADDR=other.addr, TQ_SETUP_LOG=str(tmp_path / "setup.log"))
        out = subprocess.run(["bash", "scripts/quickstart.sh", "--once"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
        text = out.stdout + out.stderr
        assert out.returncode == 1, text[-3000:]
        assert "it is not this quickstart's broker" in text, text[-3000:]
        assert "completed" not in text
        with Client(other.addr) as client:
            assert client.queues() == {}  # no demo task reached the other broker
    finally:
        other.stop()


@pytest.mark.slow
def test_the_fast_loop_installs_no_container_runtime(tmp_path):
    """`scripts/test.sh -m "not slow"` runs no container: no docker-compose (docker.io,
    containerd and ~100 packages); the whole suite still gets it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake_tool(bin_dir, "dpkg", "exit 1\n")  # everything is missing
    fake_tool(bin_dir, "apt-get", f'echo "$*" >> {calls}\n')
    fake_tool(bin_dir, "sudo", 'exec "$@"\n')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               TQ_SETUP_LOG=str(tmp_path / "setup.log"),
               TQ_VENV=str(Path(sys.executable).parent.parent))
    out = subprocess.run(["bash", "scripts/test.sh", "-m", "not slow", "--collect-only",
                          "-q", "tests/test_setup_scripts.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    installed = calls.read_text()
    assert "jq" in installed and "docker-compose" not in installed
