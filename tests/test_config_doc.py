"""docs/configuration.md is generated from broker/config.py's SCHEMA and must not drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broker import config_doc
from broker.config import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m broker.config_doc > docs/configuration.md"


def test_configuration_doc_matches_the_schema():
    assert DOC.read_text() == config_doc.render(), (
        f"docs/configuration.md differs from broker/config.py's SCHEMA: run `{REGENERATE}`")


def test_every_key_is_documented_with_its_default():
    text = DOC.read_text()
    for section, keys in SCHEMA.items():
        assert f"\n## {section}\n" in text
        for name, key in keys.items():
            row = next((line for line in text.splitlines()
                        if line.startswith(f"| `{section}.{name}` |")), None)
            assert row, f"{section}.{name} missing from docs/configuration.md"
            assert key.help.split()[0] in row


def test_generator_runs_as_the_doc_says():
    out = subprocess.run([sys.executable, "-m", "broker.config_doc"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out == DOC.read_text()
