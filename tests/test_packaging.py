"""The package as users install it: every package listed, a non-editable wheel that works from
any directory, and a ``--help`` for every command that lists all of its flags."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from aura.build import COMMANDS

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs one command's --help through the real entry point and reports what it printed, the exit
# code, every flag the command defines and where aura was imported from.
HELP_SCRIPT = r"""
import contextlib, io, json, sys
from absl import flags
import aura, aura.build
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    try:
        aura.build.run(["aura", sys.argv[1], "--help"])
        code = None
    except SystemExit as e:
        code = e.code
mods = flags.FLAGS.flags_by_module_dict()
names = sorted({f.name for m, fl in mods.items() if m.startswith("aura.") for f in fl})
others = sorted({f.name for m, fl in mods.items() if not m.startswith("aura.") for f in fl})
print(json.dumps({"code": code, "help": buf.getvalue(), "flags": names, "others": others,
                  "aura": aura.__file__}))
"""


def test_pyproject_lists_every_package():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "aura").rglob("__init__.py")
    }
    assert listed == found | {"aura.configs"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """AURA built as a wheel and installed (not editable) into a directory of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", ROOT],
                   check=True, capture_output=True, cwd=tmp)  # fmt: skip
    wheel = next((tmp / "dist").glob("aura-*.whl"))
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True,
                   capture_output=True)  # fmt: skip
    return site


def test_every_command_helps_from_a_non_editable_install(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed), "JAX_PLATFORMS": "cpu"}
    procs = {
        cmd: subprocess.Popen([sys.executable, "-c", HELP_SCRIPT, cmd], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in COMMANDS
    }  # fmt: skip
    for cmd, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (cmd, err[-2000:])
        res = json.loads(out.strip().splitlines()[-1])
        assert res["aura"].startswith(str(installed)), res["aura"]  # not the source tree
        assert res["code"] == 0, (cmd, res["help"][-500:])
        assert res["flags"], cmd
        for flag in res["flags"]:
            assert f"--{flag}:" in res["help"], (cmd, flag)
        for flag in res["others"]:  # libraries' own flags (absl logging, grain, ...) stay out
            assert f"--{flag}:" not in res["help"], (cmd, flag)
        if "config" in res["flags"]:  # the preset file default points into the installed package
            assert str(installed) in res["help"], (cmd, res["help"])
