"""A disk that fills while a checkpoint, a dataset's shards or its manifest are written: one line
naming what was being written and where, the previous checkpoint or version intact, no partial
temporary left taking space. The full disk is a real limit: RLIMIT_FSIZE makes a write past it
fail with EFBIG, as a full disk fails one with ENOSPC (Python ignores SIGXFSZ)."""

import json
import re
import resource
from contextlib import contextmanager

import numpy as np
import pytest
from typer.testing import CliRunner

from genimg.cli import app
from genimg.data import versions
from genimg.data.versions import resolve_version
from genimg.settings import local_runs_dir
from genimg.store import DiskFull, open_store

runner = CliRunner()
DISK_FULL = r"file size limit reached on /\S* while writing {what} \({intact}\) — free space or set GENIMG_HOME/GENIMG_STORE elsewhere"


@contextmanager
def file_size_limit(limit_bytes):
    """No file of this process grows past `limit_bytes` in the block (the soft limit; restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def one_error_line(result):
    """The command's one error line (its progress lines, `genimg: …`, aside)."""
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("genimg: ")]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_checkpoint_that_does_not_fit_fails_in_one_line_and_the_previous_one_is_intact():
    # model.width=64: model.safetensors 1.2 MB fits under the limit, state.safetensors 2.3 MB does not.
    train = [
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--workers",
        "0",
        "--set",
        "model.width=64",
        "--set",
        "model.latent_dim=4",
        "--batch-size",
        "16",
        "--set",
        "eval.at_end_of_training=false",
        "--run-name",
        "full",
    ]
    assert runner.invoke(app, [*train, "--steps", "2"]).exit_code == 0
    checkpoints = local_runs_dir() / "full" / "checkpoints"
    with file_size_limit(1_500_000):
        result = runner.invoke(app, [*train, "--steps", "4", "--resume"])
    line = one_error_line(result)
    uri = (checkpoints / "step-00000004").as_uri()
    assert re.search(
        DISK_FULL.format(what=f"checkpoint step 4 to {uri}", intact="the previous checkpoint, step 2, is intact"), line
    ), line
    assert [path.name for path in checkpoints.iterdir()] == ["step-00000002"]  # no partial staging left
    resumed = runner.invoke(app, [*train, "--steps", "4", "--resume", "--json"])  # from the intact step 2
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["resumed_from_step"] == 2, resumed.output


def test_a_store_write_that_does_not_fit_leaves_the_object_and_no_temporary(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    store.put_bytes("a/object.bin", b"before")
    with file_size_limit(100_000), pytest.raises(DiskFull) as full:
        store.put_bytes("a/object.bin", bytes(200_000))
    assert re.fullmatch(
        DISK_FULL.format(what=f"{store.uri}/a/object.bin", intact="the object there before, if any, is intact"),
        str(full.value),
    ), str(full.value)
    with file_size_limit(100_000), pytest.raises(DiskFull, match="while writing .*/a/new.json"):
        store.publish("a/new.json", bytes(200_000))
    assert store.get_bytes("a/object.bin") == b"before" and not store.exists("a/new.json")
    assert sorted(path.name for path in (tmp_path / "store" / "a").iterdir()) == ["object.bin"]


def test_a_manifest_that_does_not_fit_fails_in_one_line_and_the_previous_version_stays_current(tmp_path, monkeypatch):
    """Shards of 16 records fit under the limit, the manifest listing some 70 of them (13 kB) does not."""
    monkeypatch.setattr(versions, "SHARD_BYTES", 16 * 16 * 16)
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    rng = np.random.default_rng(0)
    np.save(tmp_path / "first.npy", rng.integers(0, 256, (40, 16, 16), dtype=np.uint8))
    np.save(tmp_path / "second.npy", rng.integers(0, 256, (1000, 16, 16), dtype=np.uint8))
    first = runner.invoke(app, ["ingest", str(tmp_path / "first.npy"), "--name", "noise", "--json"])
    assert first.exit_code == 0, first.output
    version = json.loads(first.stdout)["version"]
    with file_size_limit(8_000):
        result = runner.invoke(app, ["ingest", str(tmp_path / "second.npy"), "--name", "noise"])
    line = one_error_line(result)
    assert re.search(
        DISK_FULL.format(
            what=r"\S+/datasets/noise/\w+/manifest\.json", intact=f"noise still means noise@{version}, which is intact"
        ),
        line,
    ), line
    assert resolve_version("noise").version == version
    assert not list((tmp_path / "store").rglob("*.tmp"))
