"""Names are matched in full: a trailing newline (which `^…$` lets through) is refused."""

import pytest

from genimg.errors import GenimgError


@pytest.mark.parametrize("name", ["abc\n", "abc\n\n", "a\nb", "\nabc"])
def test_dataset_names_with_newlines_are_refused(name):
    from genimg.data.versions import check_name, looks_like_ref, parse_ref

    with pytest.raises(GenimgError, match="invalid dataset name"):
        check_name(name)
    assert not looks_like_ref(name)
    with pytest.raises(GenimgError):
        parse_ref("digits@291043e66cae\n" if name == "abc\n" else name)


def test_dataset_version_with_trailing_newline_is_refused():
    from genimg.data.versions import looks_like_ref, parse_ref

    assert not looks_like_ref("digits@291043e66cae\n")
    with pytest.raises(GenimgError, match="invalid dataset version"):
        parse_ref("digits@291043e66cae\n")


@pytest.mark.parametrize("name", ["run\n", "run-1\n", "-run", "a" * 129, "a b"])
def test_run_names_are_matched_in_full(name):
    from genimg.names import check_run_name

    with pytest.raises(GenimgError, match="invalid --run-name"):
        check_run_name(name)


def test_store_keys_are_matched_in_full(tmp_path):
    from genimg.store import LocalStore, StoreError

    store = LocalStore(tmp_path)
    with pytest.raises(StoreError, match="invalid object key"):
        store.put_bytes("datasets/abc\n/manifest.json", b"{}")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["0" * 32 + "\n", "models:/genimg-digits-vae@champion\n"])
def test_run_ids_and_model_uris_are_matched_in_full(target):
    from genimg.tracking.evaluations import resolve_target

    with pytest.raises(
        GenimgError, match="is not an MLflow run id, a models:/ URI or a model folder|invalid model URI"
    ):
        resolve_target(target)


def test_ingest_refuses_a_name_with_a_newline_from_the_command_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from genimg.cli import app

    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    result = CliRunner().invoke(app, ["ingest", "builtin:digits", "--name", "abc\n"])
    assert result.exit_code == 1
    assert "invalid dataset name" in result.output
    assert not (tmp_path / "store" / "datasets").exists()
