"""The layering rules of DESIGN.md §2, checked on the real import graph."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "genimg"


@pytest.mark.parametrize("module", ["genimg.models", "genimg.data", "genimg.training", "genimg.cli"])
def test_core_modules_do_not_import_ray_mlflow_or_prefect(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('ray', 'mlflow', 'prefect') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def imports(path: Path, package: str) -> bool:
    return bool(re.search(rf"^\s*(import|from) {package}\b", path.read_text(), re.MULTILINE))


def test_prefect_never_appears_below_pipelines():
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if imports(p, "prefect")]
    assert offenders == []


def test_the_training_loop_never_imports_ray_mlflow_or_prefect():
    offenders = [
        str(p) for p in (PACKAGE / "training").rglob("*.py")
        if any(imports(p, name) for name in ("ray", "mlflow", "prefect"))
    ]
    assert offenders == []


def test_models_never_import_training():
    offenders = [str(p) for p in (PACKAGE / "models").rglob("*.py") if imports(p, "genimg.training")]
    assert offenders == []


@pytest.mark.parametrize(("package", "owner"), [("ray", "distributed"), ("mlflow", "tracking")])
def test_ray_and_mlflow_are_each_confined_to_one_subpackage(package, owner):
    offenders = [
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
        if imports(p, package) and p.relative_to(PACKAGE).parts[0] != owner
    ]
    assert offenders == []
