"""Array files that cannot be images, headers that lie about their size, labels that are no class
indices, a dataset whose train split is empty: each is one line naming the file (or dataset),
refused before anything large is allocated and before any run exists."""

import re
import zipfile

import numpy as np
import pytest

from genimg.data import read_source
from genimg.data.dataset import Dataset
from genimg.data.versions import plan_splits
from genimg.errors import DataError
from tests.test_cli_guards import invoke, mlflow_runs, one_line_error

IMAGES = np.zeros((6, 8, 8), np.uint8)


def write_npy_claiming(path, shape, data: bytes) -> None:
    """An .npy file whose header says `shape` (uint8) followed by `data`."""
    with path.open("wb") as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False, "shape": shape})
        stream.write(data)


@pytest.mark.parametrize(
    "array",
    [IMAGES.astype(np.complex64), IMAGES.astype(str), IMAGES.astype(bytes)],
    ids=["complex", "unicode", "bytes"],
)
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_arrays_of_complex_or_text_are_refused_naming_the_file_and_dtype(tmp_path, array, suffix):
    path = tmp_path / f"pictures{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    else:
        np.savez(path, images=array)
    dtype = re.escape(str(array.dtype))
    with pytest.raises(DataError, match=rf"^{path}(:images)?: images of dtype {dtype} cannot be pixels"):
        read_source(str(path))


def test_ingesting_a_complex_array_is_one_line(tmp_path):
    path = tmp_path / "pictures.npy"
    np.save(path, IMAGES.astype(np.complex128))
    one_line_error(invoke("ingest", str(path), "--name", "pictures"), f"{path}: images of dtype complex128")


def test_a_header_claiming_10_to_the_12_records_is_refused_before_allocating(tmp_path):
    path = tmp_path / "lies.npy"
    write_npy_claiming(path, (10**12, 8, 8), IMAGES.tobytes())
    with pytest.raises(DataError, match=rf"^{path}: its header claims uint8 \(1000000000000, 8, 8\) .* truncated"):
        read_source(str(path))
    archive = tmp_path / "lies.npz"
    with zipfile.ZipFile(archive, "w") as rewritten, rewritten.open("images.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 8, 8)})
        member.write(IMAGES.tobytes())
    with pytest.raises(DataError, match=rf"^{archive}:images: its header claims"):
        read_source(str(archive))


def test_an_array_larger_than_the_memory_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((40, 16, 16), np.uint8))
    monkeypatch.setenv("GENIMG_MEMORY_LIMIT", "4K")
    with pytest.raises(DataError, match=r"uint8 \(40, 16, 16\) needs about 10.0 KiB .* 4.0 KiB limit"):
        read_source(str(path))


@pytest.mark.parametrize(("dtype", "label"), [(np.int64, 3_000_000), (np.int64, 10**12), (np.uint64, 2**64 - 1)])
def test_labels_that_are_not_small_class_indices_are_refused(tmp_path, dtype, label):
    path = tmp_path / "labelled.npz"
    np.savez(path, images=IMAGES, labels=np.array([0, 1, 2, label, 1, 0], dtype))
    with pytest.raises(DataError, match=rf"^{path}:labels: label {label} \(record 3\) is not a class index"):
        read_source(str(path))
    np.savez(path, images=IMAGES, labels=np.array([0, 1, 2, -1, 1, 99_999]))
    assert read_source(str(path)).labels.tolist() == [0, 1, 2, -1, 1, 99_999]


def records_without_a_train_split() -> np.ndarray:
    """A few records whose content hashes all fall in the val and test splits."""
    for seed in range(10_000):
        records = np.random.default_rng(seed).integers(0, 255, (3, 1, 8, 8), dtype=np.uint8)
        if not plan_splits(Dataset("images", records, "probe")).by_split["train"]:
            return records
    raise AssertionError("no such records found")


def test_training_on_a_dataset_whose_train_split_is_empty_is_one_line_and_leaves_no_run(tmp_path):
    path = tmp_path / "few.npy"
    np.save(path, records_without_a_train_split()[:, 0])
    assert invoke("ingest", str(path), "--name", "few").exit_code == 0
    for dataset in ("few", str(path)):
        result = invoke(
            "train", "--model", "vae", "--dataset", dataset, "--workers", "0", "--steps", "1", "--set", "model.width=4"
        )
        one_line_error(result, f"{dataset}: its 3 record(s) leave none in the train split")
    assert mlflow_runs() == []
