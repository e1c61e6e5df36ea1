"""Versioned ingestion, on a local-directory store and on S3 over HTTP (moto_server)."""

import io
import json
import subprocess
import sys

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from genimg.cli import app
from genimg.data import read_source
from genimg.data.versions import ingest_dataset, list_versions, resolve_version
from genimg.errors import DataError
from genimg.store import open_store
from tests.conftest import write_idx

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, list(args))


def test_reingesting_the_same_source_gives_the_same_version_and_uploads_nothing(store_uri):
    first = cli("ingest", "builtin:digits", "--name", "digits", "--json")
    second = cli("ingest", "builtin:digits", "--name", "digits", "--json")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["version"] == b["version"] and a["uri"] == b["uri"]
    assert a["uploaded_objects"] == 4 and not a["reused"]  # 3 splits + the manifest
    assert b["uploaded_objects"] == 0 and b["uploaded_bytes"] == 0 and b["reused"]
    assert sum(a["counts"].values()) == 1797 and a["rejected"] == []
    assert a["uri"] == f"{store_uri}/datasets/digits/{a['version']}"


def test_folder_with_bad_files_keeps_every_valid_image(store_uri, tmp_path, digits, monkeypatch):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(digits[i, 0]).save(folder / f"{i:02d}.png")
    whole = (folder / "00.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "letter.png").write_text("Dear reader, I am not a PNG.")
    monkeypatch.chdir(tmp_path)
    result = cli("ingest", "pngs", "--name", "pngs", "--json")  # relative: the manifest says where it is
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sum(payload["counts"].values()) == 12
    rejected = {r["item"].rsplit("/", 1)[1]: r["reason"] for r in payload["rejected"]}
    assert set(rejected) == {"truncated.png", "letter.png"}
    assert all(rejected.values())
    version = resolve_version("pngs")
    assert version.source == str(folder.resolve())
    loaded = version.load(("train", "val", "test"))
    assert sorted(loaded.data.reshape(12, -1).sum(1)) == sorted(digits[:12].reshape(12, -1).sum(1))


def ten_thousand_digits(digits):
    """10,000 distinct 28×28 digits: each builtin digit at up to 6 positions in the frame."""
    images = np.zeros((10_000, 28, 28), np.uint8)
    for i in range(10_000):
        offset = (i // 1797) * 2
        images[i, offset : offset + 16, 6:22] = digits[i % 1797, 0]
    return images


def test_an_idx_file_ingests_to_the_same_version_on_file_and_s3(tmp_path, s3_env, digits, monkeypatch):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(path, ten_thousand_digits(digits), compress=True)
    dataset = read_source(str(path))
    local = ingest_dataset(dataset, "mnistish", store=open_store((tmp_path / "store").as_uri()))
    remote = ingest_dataset(dataset, "mnistish", store=open_store(f"s3://{s3_env}/x"))
    assert sum(local.counts.values()) == 10_000
    assert local.version == remote.version and local.counts == remote.counts
    assert 0.80 < local.counts["train"] / 10_000 < 0.90


def test_splits_depend_on_each_record_alone(store, digits):
    small = read_source("builtin:digits")
    small.data, small.labels = small.data[:600], small.labels[:600]
    first = ingest_dataset(small, "grow", store=store)
    second = ingest_dataset(read_source("builtin:digits"), "grow", store=store)
    assert first.version != second.version

    def splits_by_id(version):
        ids = {}
        for split in ("train", "val", "test"):
            prefix = f"datasets/grow/{version}/"
            manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
            for shard in manifest["shards"][split]:
                table = pq.read_table(io.BytesIO(store.get_bytes(prefix + shard["key"])))
                ids.update({record_id: split for record_id in table.column("id").to_pylist()})
        return ids

    old, new = splits_by_id(first.version), splits_by_id(second.version)
    assert len(old) == 600 and all(new[i] == split for i, split in old.items())
    assert resolve_version("grow", store).version == second.version  # NAME alone = latest


def test_duplicates_are_dropped_once_and_counted(store, digits):
    dataset = read_source("builtin:digits")
    dataset.data = np.concatenate([dataset.data[:50], dataset.data[:10]])
    dataset.labels = np.concatenate([dataset.labels[:50], dataset.labels[:10]])
    result = ingest_dataset(dataset, "dups", store=store)
    assert sum(result.counts.values()) == 50 and result.duplicates == 10


@pytest.mark.parametrize("name", ["../escape", "a/b", "x y", "", ".hidden", "UPPER", "a" * 64, "na;me"])
def test_unsafe_names_are_refused(store_uri, name):
    result = cli("ingest", "builtin:digits", "--name", name)
    assert result.exit_code == 1 and "invalid dataset name" in result.stderr
    assert list_versions() == []


def test_an_empty_source_is_an_error_and_publishes_nothing(store_uri, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("ingest", str(tmp_path / "empty"), "--name", "empty")
    assert result.exit_code == 1 and "empty folder" in result.stderr
    assert list_versions() == []


def test_an_ingest_killed_before_its_manifest_is_invisible_and_a_rerun_completes_it(store):
    dataset = read_source("builtin:digits")
    result = ingest_dataset(dataset, "digits", store=store)
    store.delete(f"datasets/digits/{result.version}/manifest.json")  # shards written, no manifest
    assert list_versions(store) == []
    with pytest.raises(DataError, match="dataset 'digits' not found"):
        resolve_version("digits", store)
    rerun = ingest_dataset(dataset, "digits", store=store)
    assert rerun.version == result.version and not rerun.reused
    assert rerun.uploaded_objects == 1  # the shards were already there, byte for byte
    assert len(resolve_version("digits", store).load(("train", "val", "test"))) == 1797


def test_a_store_going_down_mid_ingest_publishes_nothing_and_a_rerun_completes(monkeypatch):
    """A real S3 server stopped between two shard uploads, then started again."""
    from moto.server import ThreadedMotoServer

    from genimg.store import StoreError
    from tests.conftest import S3_CREDENTIALS

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GENIMG_S3_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("GENIMG_S3_CONNECT_TIMEOUT", "0.5")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    boto3.client("s3").create_bucket(Bucket="flaky")
    store = open_store("s3://flaky/store")

    def stop_after_first_shard(done, total):
        if done == 1:
            server.stop()

    dataset = read_source("builtin:digits")
    with pytest.raises(StoreError, match="s3://flaky/store/datasets/digits/.*cannot (read|write).*Could not connect"):
        ingest_dataset(dataset, "digits", store=store, progress=stop_after_first_shard)
    restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    restarted.start()
    try:
        assert list_versions(store) == []  # a shard landed, but no version is visible
        result = ingest_dataset(dataset, "digits", store=store)
        assert result.uploaded_objects == 3  # two missing shards + the manifest
        assert len(resolve_version("digits", store).load(("train", "val", "test"))) == 1797
    finally:
        restarted.stop()


def test_concurrent_ingests_of_one_source_make_one_intact_version(store_uri):
    command = [sys.executable, "-m", "genimg.cli", "ingest", "builtin:digits", "--name", "race", "--json"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    versions = {json.loads(out)["version"] for out, _ in outputs}
    assert len(versions) == 1
    published = list_versions(open_store(store_uri), "race")
    assert [v.version for v in published] == list(versions)
    assert len(published[0].load(("train", "val", "test"))) == 1797  # checksums verified


def test_a_corrupt_shard_is_detected_on_read(store, store_uri):
    result = ingest_dataset(read_source("builtin:digits"), "digits", store=store)
    key = f"datasets/digits/{result.version}/train/part-00000.parquet"
    if store_uri.startswith("file:"):
        path = store.root / key
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        boto3.client("s3").put_object(Bucket=store.bucket, Key=store.object_key(key), Body=b"garbage")
    with pytest.raises(Exception, match="checksum mismatch"):
        resolve_version("digits", store).load()


def test_an_s3_folder_is_a_source_and_rejections_name_s3_items(s3_env, tmp_path, monkeypatch, digits):
    client = boto3.client("s3")
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(digits[i, 0]).save(path)
        client.upload_file(str(path), s3_env, f"raw/class-a/{i}.png")
    client.put_object(Bucket=s3_env, Key="raw/class-a/broken.png", Body=b"nope")
    monkeypatch.setenv("GENIMG_STORE", f"s3://{s3_env}/store")
    result = cli("ingest", f"s3://{s3_env}/raw", "--name", "from-s3", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sum(payload["counts"].values()) == 5
    assert payload["rejected"][0]["item"] == f"s3://{s3_env}/raw/class-a/broken.png"


def test_training_reads_a_store_dataset_by_name_and_version(store_uri):
    version = json.loads(cli("ingest", "builtin:digits", "--name", "digits", "--json").stdout)["version"]
    for ref in ("digits", f"digits@{version}"):
        result = cli(
            "train",
            "--model",
            "vae",
            "--dataset",
            ref,
            "--steps",
            "2",
            "--workers",
            "0",
            "--set",
            "model.width=4",
            "--batch-size",
            "8",
            "--json",
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["metrics"]["step"] == 2
    missing = cli("train", "--model", "vae", "--dataset", "digits@0123456789ab", "--steps", "1", "--workers", "0")
    assert missing.exit_code == 1 and "digits@0123456789ab not found" in missing.stderr


def test_datasets_lists_the_versions(store_uri):
    cli("ingest", "builtin:digits", "--name", "digits")
    cli("ingest", "builtin:moving-digits", "--name", "moving")
    listed = json.loads(cli("datasets", "--json").stdout)
    assert [(d["name"], d["kind"]) for d in listed["datasets"]] == [("digits", "images"), ("moving", "sequences")]
    assert listed["datasets"][1]["record_shape"] == [10, 1, 32, 32]


def test_re_ingesting_an_older_content_makes_that_version_current_again(tmp_path, digits):
    from genimg.data.dataset import Dataset
    from genimg.data.handle import resolve_dataset
    from genimg.data.versions import ingest_dataset, resolve_version
    from genimg.store import open_store

    store = open_store((tmp_path / "store").as_uri())
    older = ingest_dataset(Dataset("images", digits[:300], "a"), "ab", store=store)
    newer = ingest_dataset(Dataset("images", digits[:400], "b"), "ab", store=store)
    assert older.version != newer.version and resolve_version("ab", store).version == newer.version
    again = ingest_dataset(Dataset("images", digits[:300], "a"), "ab", store=store)
    assert again.reused and again.uploaded_objects == 0  # nothing uploaded, but now it is current
    assert resolve_version("ab", store).version == older.version
    assert resolve_dataset("ab", store=store).version == older.version  # what `train --dataset ab` reads
    assert resolve_version(f"ab@{newer.version}", store).version == newer.version  # still pinned by version
