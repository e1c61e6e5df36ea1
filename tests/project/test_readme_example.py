"""The README's Python API example, run as written (in a fresh process, from another folder)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STARTS_RAY

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the Python API section shows one example"
    return blocks[0]


@STARTS_RAY
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_readme_python_example_runs(tmp_path):
    env = {key: value for key, value in __import__("os").environ.items() if not key.startswith(("MLFLOW_", "GENIMG_"))}
    env["GENIMG_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", python_example()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=580
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "digits.png").stat().st_size > 0
