"""What the repository itself promises: no run state committed, the CPU torch install."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_database_or_run_state_is_committed_and_such_files_are_ignored():
    tracked = [
        path for path in git("ls-files").splitlines() if re.search(r"\.(db|sqlite3?)$|(^|/)(mlruns|mlartifacts)/", path)
    ]
    assert tracked == []
    for stray in ("mlflow.db", "sub/dir/mlflow.db", "mlruns/0/meta.yaml", "mlartifacts/1/x"):
        assert git("check-ignore", "--no-index", stray).strip() == stray


def test_torch_comes_from_the_cpu_wheel_index_with_a_fallback_to_the_plain_pin():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_INDEX ?= https://download.pytorch.org/whl/cpu" in makefile
    probe, cpu, plain = (
        makefile.index("u.urlopen('$(TORCH_INDEX)/torch/'"),
        makefile.index('--index-url "$(TORCH_INDEX)" "$(TORCH_PIN)"'),
        makefile.index("else \\\n"),
    )
    assert probe < cpu < plain, "torch: the CPU index where it answers, else the plain pin"
    assert makefile[plain:].split("fi\n", 1)[0].count('-m pip install --quiet "$(TORCH_PIN)"') == 1
    # and before the project, whose open torch>=2.4 would otherwise resolve to a CUDA build
    assert makefile.index("$(TORCH_INDEX)") < makefile.index('-e ".[dev,postgres]"')
