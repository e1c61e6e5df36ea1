"""The README's registry section says what loading a registered model trusts."""

from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def registry_section() -> str:
    text = README.read_text()
    start = text.index("## Registry and promotion")
    end = text.find("\n## ", start + 1)
    return " ".join(text[start:end].split())  # one line: sentences wrap anywhere


def test_a_pyfunc_load_runs_stored_code_while_genimg_sample_reads_only_weights_and_json():
    section = registry_section()
    assert "`mlflow.pyfunc.load_model` runs the model's stored code (MLflow models-from-code" in section
    assert "whoever can write the registry's artifacts can run code in every consumer" in section
    assert (
        "`genimg sample models:/…` and `genimg evaluate models:/…` read only the version's safetensors and JSON"
        in section
    )


def test_the_promotion_records_and_lock_are_described():
    section = registry_section()
    assert "`genimg.promotion.<decision id>`" in section and "`genimg.promoted.decision`" in section
    assert "`genimg.reevaluation.<evaluation id>`" in section and "never change" in section
    assert "renews it" in section and "lost the promotion lock" in section
