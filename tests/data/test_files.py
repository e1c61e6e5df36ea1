"""Readers on real files written by the tests: IDX, npy/npz, image and sequence folders."""

import gzip

import numpy as np
import pytest
from PIL import Image

from genimg.data import read_source
from genimg.errors import DataError
from tests.conftest import write_idx


@pytest.mark.parametrize("compress", [True, False])
def test_idx_images_with_labels_beside(tmp_path, digits, compress):
    suffix = ".gz" if compress else ""
    images = digits[:20, 0]
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(20) % 10, compress)
    dataset = read_source(str(tmp_path / f"train-images-idx3-ubyte{suffix}"))
    assert np.array_equal(dataset.data[:, 0], images)
    assert dataset.labels.tolist() == (np.arange(20) % 10).tolist()


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_idx_keeps_the_complete_records(tmp_path, digits, compress):
    path = tmp_path / "cut-images-idx3-ubyte"
    write_idx(path, digits[:10, 0], compress=False)
    raw = path.read_bytes()
    cut = raw[: 16 + 256 * 6 + 100]  # 6 whole records and part of the 7th
    path.write_bytes(gzip.compress(cut)[:-8] if compress else cut)
    dataset = read_source(str(path))
    assert len(dataset) == 6 and np.array_equal(dataset.data[:, 0], digits[:6, 0])
    assert [r.item for r in dataset.rejected] == [f"{path}[6:10]"]
    assert "truncated" in dataset.rejected[0].reason


def test_idx_labels_that_do_not_match_are_reported_and_images_kept(tmp_path, digits):
    write_idx(tmp_path / "x-images-idx3-ubyte", digits[:5, 0], compress=False)
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.arange(4), compress=False)
    dataset = read_source(str(tmp_path / "x-images-idx3-ubyte"))
    assert len(dataset) == 5 and dataset.labels is None
    assert "4 labels for 5 images" in dataset.rejected[0].reason


def test_idx_with_a_bad_magic_number_is_refused(tmp_path):
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"not idx at all")
    with pytest.raises(DataError, match="bad magic number"):
        read_source(str(tmp_path / "bad-images-idx3-ubyte"))


@pytest.mark.parametrize(
    ("layout", "make"),
    [
        ("N,H,W", lambda x: x[:, 0]),
        ("N,C,H,W", lambda x: x),
        ("N,H,W,C", lambda x: x.transpose(0, 2, 3, 1)),
        ("N,H*W", lambda x: x.reshape(len(x), -1)),
        ("float [0,1]", lambda x: x.astype(np.float32) / 255),
    ],
)
def test_npy_layouts_become_n_c_h_w_uint8(tmp_path, digits, layout, make):
    np.save(tmp_path / "a.npy", make(digits[:8]))
    dataset = read_source(str(tmp_path / "a.npy"))
    assert dataset.data.dtype == np.uint8 and dataset.data.shape == (8, 1, 16, 16), layout
    assert np.array_equal(dataset.data, digits[:8])


def test_npz_bad_records_are_rejected_and_the_rest_kept(tmp_path, digits):
    images = digits[:6].astype(np.float32)
    images[2, 0, 0, 0] = np.nan
    images[4, 0, 3, 3] = 300.0
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(6))
    dataset = read_source(str(tmp_path / "d.npz"))
    assert len(dataset) == 4 and dataset.labels.tolist() == [0, 1, 3, 5]
    reasons = {r.item: r.reason for r in dataset.rejected}
    assert "non-finite" in reasons[f"{tmp_path / 'd.npz'}[2]"]
    assert "outside [0, 255]" in reasons[f"{tmp_path / 'd.npz'}[4]"]


def test_npy_sequences_and_odd_shapes(tmp_path, small_sequences):
    np.save(tmp_path / "seq.npy", small_sequences[:4])
    assert read_source(str(tmp_path / "seq.npy")).kind == "sequences"
    np.save(tmp_path / "odd.npy", np.zeros((3, 5, 16, 16, 16, 2), np.uint8))
    with pytest.raises(DataError, match="odd shape"):
        read_source(str(tmp_path / "odd.npy"))
    np.save(tmp_path / "flat.npy", np.zeros((3, 250), np.uint8))
    with pytest.raises(DataError, match="not square"):
        read_source(str(tmp_path / "flat.npy"))


def test_pickled_arrays_are_never_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable"):
        read_source(str(tmp_path / "obj.npy"))


def make_image_folder(root, digits):
    for label in ("cat0", "cat1"):
        (root / label).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(digits[i, 0]).save(root / "cat0" / f"{i}.png")
        Image.fromarray(digits[10 + i, 0]).convert("RGB").save(root / "cat1" / f"{i}.jpg", quality=95)
    return root


def test_image_folder_with_class_subfolders_gives_labels(tmp_path, digits):
    dataset = read_source(str(make_image_folder(tmp_path / "imgs", digits)))
    assert dataset.data.shape == (6, 3, 16, 16)  # one colour file makes the dataset RGB
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.class_names == ["cat0", "cat1"]
    assert np.array_equal(dataset.data[0, 0], digits[0, 0])


def test_image_folder_rejects_each_bad_file_and_keeps_the_rest(tmp_path, digits):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(4):
        Image.fromarray(digits[i, 0]).save(root / f"good{i}.png")
    good = (root / "good0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (root / "notes.txt").write_text("not an image")
    (root / "text-as.jpg").write_text("hello")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(root / "tiny.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "big.png")
    dataset = read_source(str(root))
    assert len(dataset) == 5 and dataset.data.shape[1:] == (1, 16, 16)  # big.png resized
    reasons = {r.item.rsplit("/", 1)[1]: r.reason for r in dataset.rejected}
    assert set(reasons) == {"truncated.png", "garbage.png", "notes.txt", "text-as.jpg", "tiny.png"}
    assert "truncated" in reasons["truncated.png"]
    assert "not an image file" in reasons["notes.txt"]
    assert "odd shape" in reasons["tiny.png"]


def test_empty_and_all_bad_folders_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        read_source(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    with pytest.raises(DataError, match=r"no valid images; 1 item\(s\) rejected, first .*x.png"):
        read_source(str(tmp_path / "bad"))


def test_sequence_folder_one_subfolder_per_sequence(tmp_path, small_sequences):
    root = tmp_path / "seqs"
    for s in range(3):
        (root / f"seq{s}").mkdir(parents=True)
        for t in range(6):
            Image.fromarray(small_sequences[s, t, 0]).save(root / f"seq{s}" / f"frame{t}.png")
    (root / "short").mkdir()
    Image.fromarray(small_sequences[0, 0, 0]).save(root / "short" / "frame0.png")
    (root / "broken").mkdir()
    (root / "broken" / "frame0.png").write_bytes(b"junk")
    dataset = read_source(str(root), kind="sequences")
    assert dataset.data.shape == (3, 6, 1, 16, 16)
    assert np.array_equal(dataset.data, small_sequences[:3])
    reasons = {r.item.rsplit("/", 1)[1]: r.reason for r in dataset.rejected}
    assert "1 frames" in reasons["short"] and "frame0.png" in reasons["broken"]


def test_frames_sort_in_natural_order(tmp_path, small_sequences):
    root = tmp_path / "seqs" / "a"
    root.mkdir(parents=True)
    for t in range(6):
        Image.fromarray(small_sequences[0, t, 0]).save(root / f"f{t * 5}.png")  # f0 f5 f10 …
    dataset = read_source(str(tmp_path / "seqs"), kind="sequences")
    assert np.array_equal(dataset.data[0], small_sequences[0])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("builtin:cifar", "unknown builtin dataset"),
        ("gs://bucket/x", "sources are builtin:, local paths or s3:// URIs"),
        ("/definitely/not/here", "dataset source not found"),
    ],
)
def test_unusable_sources_are_named_in_the_error(source, message):
    with pytest.raises(DataError, match=message):
        read_source(source)


def test_large_folders_decode_in_parallel_with_the_same_result(tmp_path, digits, monkeypatch):
    from genimg.data.folders import PARALLEL_MIN_FILES

    root = tmp_path / "many"
    root.mkdir()
    for i in range(PARALLEL_MIN_FILES + 10):
        Image.fromarray(digits[i % len(digits), 0]).save(root / f"{i}.png")
    (root / "1000x.png").write_bytes(b"broken")
    monkeypatch.setenv("GENIMG_DECODE_WORKERS", "2")
    parallel = read_source(str(root))
    monkeypatch.setenv("GENIMG_DECODE_WORKERS", "1")
    sequential = read_source(str(root))
    assert len(parallel) == PARALLEL_MIN_FILES + 10
    assert np.array_equal(parallel.data, sequential.data)
    assert parallel.rejected == sequential.rejected and parallel.rejected[0].item.endswith("1000x.png")
    assert np.array_equal(parallel.data[1234, 0], digits[1234 % len(digits), 0])  # order kept
