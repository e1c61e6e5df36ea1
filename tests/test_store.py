import boto3
import pytest

from genimg.store import ChecksumMismatch, StoreError, open_store, sha256_hex


def test_put_get_list_exists_delete(store):
    store.put_bytes("a/b/one.bin", b"1")
    store.put_bytes("a/two.bin", b"22")
    assert store.get_bytes("a/two.bin", sha256=sha256_hex(b"22")) == b"22"
    assert store.list("a/") == ["a/b/one.bin", "a/two.bin"]
    assert store.exists("a/b/one.bin") and not store.exists("a/b/none.bin")
    info = store.info("a/two.bin")
    assert info.size == 2 and info.sha256 == sha256_hex(b"22")
    store.delete("a/two.bin")
    assert store.list("a/") == ["a/b/one.bin"]


def test_files_round_trip(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"payload" * 100)
    store.put_file("f/in.bin", source)
    target = store.get_file("f/in.bin", tmp_path / "out.bin", sha256=sha256_hex(source.read_bytes()))
    assert target.read_bytes() == source.read_bytes()


def test_publish_creates_only_once(store):
    assert store.publish("v/manifest.json", b"first") is True
    assert store.publish("v/manifest.json", b"second") is False
    assert store.get_bytes("v/manifest.json") == b"first"


def test_reads_verify_checksums(store, store_uri, tmp_path):
    store.put_bytes("x/data.bin", b"good bytes")
    if store_uri.startswith("file:"):
        (store.root / "x" / "data.bin").write_bytes(b"evil bytes")
    else:  # overwrite behind genimg's back
        boto3.client("s3").put_object(Bucket=store.bucket, Key=store.object_key("x/data.bin"), Body=b"evil bytes")
    with pytest.raises(ChecksumMismatch, match="x/data.bin: checksum mismatch"):
        store.get_bytes("x/data.bin", sha256=sha256_hex(b"good bytes"))


def test_missing_objects_and_bad_keys_are_named(store):
    with pytest.raises(StoreError, match="nope.bin: no such object"):
        store.get_bytes("nope.bin")
    for key in ["../escape", "a//b", "", "a/./b", "sp ace"]:
        with pytest.raises(StoreError, match="invalid object key"):
            store.put_bytes(key, b"x")


def test_large_objects_go_up_in_parts(s3_env):
    store = open_store(f"s3://{s3_env}")
    payload = bytes(range(256)) * (20 * 1024 * 1024 // 256)  # 20 MiB > the 16 MiB threshold
    store.put_bytes("big.bin", payload)
    head = boto3.client("s3").head_object(Bucket=s3_env, Key="big.bin")
    assert head["ETag"].strip('"').endswith("-2")  # S3's mark of a 2-part multipart upload
    assert store.get_bytes("big.bin", sha256=sha256_hex(payload)) == payload


def test_a_store_that_is_down_fails_clearly_after_retries(s3_env, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GENIMG_S3_CONNECT_TIMEOUT", "0.5")
    store = open_store(f"s3://{s3_env}/p")
    with pytest.raises(StoreError) as caught:
        store.put_bytes("k.bin", b"x")
    message = str(caught.value)
    assert message.startswith(f"s3://{s3_env}/p/k.bin: cannot write")
    assert "Could not connect" in message
    assert "testing-secret-value-42" not in message and "testing-access-key" not in message


def test_default_store_is_under_genimg_home(monkeypatch, tmp_path):
    monkeypatch.delenv("GENIMG_STORE", raising=False)
    monkeypatch.setenv("GENIMG_HOME", str(tmp_path))
    assert open_store().uri == (tmp_path / "store").as_uri()
    with pytest.raises(StoreError, match="unsupported store URI"):
        open_store("gs://bucket/x")


def test_credentials_in_the_store_uri_are_refused_without_repeating_them(monkeypatch):
    from typer.testing import CliRunner

    from genimg.cli import app

    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID") as refused:
        open_store("s3://AKIAEXAMPLE:very-secret-key@bucket/prefix")
    assert "very-secret-key" not in str(refused.value)
    monkeypatch.setenv("GENIMG_STORE", "s3://AKIAEXAMPLE:very-secret-key@bucket/prefix")
    result = CliRunner().invoke(app, ["ingest", "builtin:digits", "--name", "digits"])
    assert result.exit_code == 1 and "carries credentials" in result.stderr
    assert "very-secret-key" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_a_home_with_a_space_and_a_non_ascii_letter_keeps_everything_in_it(tmp_path, monkeypatch):
    """`Path.as_uri()` percent-encodes: every file:// URI genimg writes is read back decoded."""
    import json

    from typer.testing import CliRunner

    from genimg.cli import app

    home = tmp_path / "my home ü"
    monkeypatch.setenv("GENIMG_HOME", str(home))
    runner = CliRunner()

    def cli(*args):
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout)

    cli("ingest", "builtin:digits", "--name", "digits")
    run = cli(
        "train",
        "--model",
        "vae",
        "--dataset",
        "digits",
        "--workers",
        "0",
        "--steps",
        "2",
        "--set",
        "model.width=4",
        "--set",
        "model.latent_dim=4",
        "--set",
        "eval.at_end_of_training=false",
    )
    assert run["checkpoint"].startswith(home.as_uri())
    evaluated = cli("evaluate", run["run_id"], "--samples", "20", "--nll-k", "2", "--extractor-steps", "20")
    assert "nll" in evaluated["metrics"]
    registered = cli("register", run["run_id"])
    cli("promote", registered["name"])
    cli("sample", f"models:/{registered['name']}@champion", "-n", "4", "-o", str(home / "s.png"))
    assert (home / "store" / "datasets" / "digits").is_dir() and (home / "s.png").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["my home ü"]  # no %20 sibling
