"""The project's own promises: README commands, CI script, Binder files, console script."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_readme_opens_with_demo_and_test_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert block[0].startswith("pip install . && clemlab demo")
    assert block[1].startswith('pip install ".[test]" && python -m pytest')


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme_cmd = re.search(r"&& (python -m pytest[^\s#]*)", (ROOT / "README.md").read_text()).group(1)
    assert readme_cmd in ci.splitlines()
    assert 'pip install --quiet ".[test]"' in ci and "CLEMLAB_REQUIRE_SHARED_DATA=1" in ci


def test_binder_requirements_match_pyproject():
    deps = _pyproject()["project"]["dependencies"]
    req = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
    strip = lambda s: re.sub(r"\s*#.*", "", s).strip()  # noqa: E731
    assert sorted(map(strip, deps)) == sorted(req)
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in post and "python -m pip install ." in post
    assert (ROOT / "binder" / "runtime.txt").read_text().strip().startswith("python-3.1")


def test_console_script_and_notebook_testing_configured():
    proj = _pyproject()
    assert proj["project"]["scripts"]["clemlab"] == "clemlab.cli:main"
    opts = proj["tool"]["pytest"]["ini_options"]
    assert "--nbval-lax" in opts["addopts"] and "notebooks" in opts["testpaths"]


def test_cli_help_and_bad_command():
    out = subprocess.run([sys.executable, "-m", "clemlab.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "clemlab.cli", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
