"""The package's metadata builds without setuptools' deprecation banner (issue 11).

Every install used to print setuptools' warning for ``project.license`` as a TOML table
(builds stop working after 2027-02-18): the SPDX string and ``license-files`` instead.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.brokerproc import ROOT

BUILD_METADATA = """
import sys, tempfile, setuptools.build_meta as backend
out = tempfile.mkdtemp()
name = backend.prepare_metadata_for_build_wheel(out)
sys.stdout.write(open(f"{out}/{name}/METADATA").read().split("\\n\\n")[0])
"""


def test_license_is_an_spdx_string_with_its_file():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    for name in project["license-files"]:
        assert (ROOT / name).is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_the_metadata_builds_without_a_deprecation_warning():
    out = subprocess.run([sys.executable, "-c", BUILD_METADATA], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Deprecat" not in out.stderr, out.stderr[-3000:]
    headers = out.stdout.splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers
