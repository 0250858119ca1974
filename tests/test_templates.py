"""The top-level templates/ (templates/README.md): one file per template, rendered in place.

Every template there is rendered by a role through a symlink in the role's templates/
(ansible-lint refuses a ``../`` in a template's src), no role keeps a copy, and the one unit template renders both units of the guide as the two
separate templates did (rendered with Jinja2 when a Python on the machine has it: Ansible's
own runs are the Molecule scenario's).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.brokerproc import ROOT

TEMPLATES = ROOT / "templates"
SRC = re.compile(r"^\s+src: ([\w.@-]+\.j2)\s*$", re.M)


def role_references() -> dict[str, list[str]]:
    """Top-level template name -> the role task files that render it (through a symlink)."""
    found: dict[str, list[str]] = {}
    for tasks in (ROOT / "roles").glob("*/tasks/*.yml"):
        for name in SRC.findall(tasks.read_text()):
            link = tasks.parent.parent / "templates" / name
            if link.is_symlink() and link.resolve() == (TEMPLATES / name).resolve():
                found.setdefault(name, []).append(str(tasks.relative_to(ROOT)))
    return found


def test_every_top_level_template_is_rendered_by_a_role_and_copied_nowhere():
    templates = sorted(p.name for p in TEMPLATES.glob("*.j2"))
    assert "task-queue-broker.service.j2" in templates and \
        "broker-config.yaml.j2" in templates
    references = role_references()
    for name in templates:
        assert name in references, f"templates/{name} is rendered by no role"
    copies = [str(p.relative_to(ROOT)) for p in (ROOT / "roles").glob("*/templates/*")
              if (p.name in templates or p.name == "task-queue-broker@.service.j2")
              and not p.is_symlink()]
    assert copies == []
    readme = (TEMPLATES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in templates)


RENDER = r"""
import json, sys, jinja2
env = jinja2.Environment(keep_trailing_newline=True, trim_blocks=True)
env.filters["bool"] = lambda v: v in (True, "true", "True", "yes", 1)
variables = json.loads(sys.argv[2])
print(env.from_string(open(sys.argv[1]).read()).render(**variables), end="")
"""
VARIABLES = {"ansible_managed": "managed", "broker_user": "taskqueue",
             "broker_group_name": "taskqueue", "broker_config_dir": "/etc/task-queue",
             "broker_nofile_limit": 65536, "broker_read_write_paths": ["/var/lib/task-queue"],
             "broker_hardening": {"NoNewPrivileges": "yes"}}


def render(path, **extra) -> str:
    python = shutil.which("python3")
    if python is None or subprocess.run([python, "-c", "import jinja2"],
                                        capture_output=True).returncode:
        pytest.skip("no Python with jinja2 on this machine")
    out = subprocess.run([python, "-c", RENDER, str(path), json.dumps({**VARIABLES, **extra})],
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_the_unit_template_renders_both_units():
    unit = TEMPLATES / "task-queue-broker.service.j2"
    plain = render(unit, broker_unit_instance=False)
    instance = render(unit, broker_unit_instance=True)
    assert "Description=Task Queue Broker\n" in plain
    assert "ExecStart=/usr/local/bin/tq-broker --config /etc/task-queue/config.yaml\n" in plain
    assert "Description=Task Queue Broker (%i)\n" in instance
    assert "ExecStart=/usr/local/bin/tq-broker --config /etc/task-queue/%i.yaml\n" in instance
    assert render(unit) == plain  # the default is the plain unit
    for text in (plain, instance):
        assert "NoNewPrivileges=yes" in text and "LimitNOFILE=65536" in text
        assert "{" not in text and "%}" not in text
    # Nothing else differs between the two units.
    differ = [(a, b) for a, b in zip(plain.splitlines(), instance.splitlines()) if a != b]
    assert [a.split("=")[0] for a, _ in differ] == ["Description", "ExecStart"]
