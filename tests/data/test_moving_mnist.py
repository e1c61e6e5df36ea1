"""Moving MNIST: Srivastava's generator from an IDX file, and the published T × N .npy layout."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from genimg.cli import app
from genimg.data import read_source
from genimg.data.moving_mnist import (
    Trajectories,
    make_moving_mnist,
    moving_mnist_trajectories,
    render_moving_mnist,
)
from genimg.data.sources import is_store_ref, split_pinned
from genimg.data.versions import resolve_version
from genimg.errors import DataError
from tests.conftest import write_idx

FREE = 64 - 28  # the free range of a 28 px digit in a 64 px canvas


def solid_digits(count: int, seed: int = 0) -> np.ndarray:
    """(count, 1, 28, 28) uint8 with no zero pixel, so a digit's bounding box is its placement
    and a clipped border would show in the frame's sum."""
    return np.random.default_rng(seed).integers(1, 256, (count, 1, 28, 28), dtype=np.uint8)


@pytest.fixture
def tiny_idx(tmp_path):
    path = tmp_path / "tiny-images-idx3-ubyte.gz"
    write_idx(path, solid_digits(10)[:, 0], compress=True)
    return path


def top_left(frames: np.ndarray) -> np.ndarray:
    """(T, 2) row and column of the first non-zero pixel of each (1, H, W) frame."""
    rows = frames[:, 0].any(axis=2).argmax(axis=1)
    cols = frames[:, 0].any(axis=1).argmax(axis=1)
    return np.stack([rows, cols], axis=1)


def test_the_same_seed_gives_the_same_sequences_and_another_seed_others():
    digits = solid_digits(20)
    a = make_moving_mnist(digits, 6, num_frames=5, seed=3)
    assert np.array_equal(a, make_moving_mnist(digits, 6, num_frames=5, seed=3))
    assert not np.array_equal(a, make_moving_mnist(digits, 6, num_frames=5, seed=4))
    # Each sequence draws its own block of numbers: fewer sequences are a prefix of more.
    assert np.array_equal(a[:2], make_moving_mnist(digits, 2, num_frames=5, seed=3))


def test_every_frame_holds_each_whole_digit():
    digits = solid_digits(5)
    sequences = make_moving_mnist(digits, 12, num_frames=20, digits_per_sequence=1, seed=1)
    assert sequences.shape == (12, 20, 1, 64, 64) and sequences.dtype == np.uint8
    chosen = moving_mnist_trajectories(12, num_digits=5, digit_shape=(28, 28), digits_per_sequence=1, seed=1).digit[
        :, 0
    ]
    mass = sequences.reshape(12, 20, -1).astype(np.int64).sum(-1)
    expected = digits.reshape(5, -1).astype(np.int64).sum(-1)[chosen]
    assert (mass == expected[:, None]).all()  # nothing clipped at a border, in any frame


def test_a_digit_moves_3_6_px_a_frame_and_bounces_exactly_at_the_walls():
    sequences = make_moving_mnist(solid_digits(1), 8, num_frames=60, digits_per_sequence=1, seed=5)
    flips = 0
    for frames in sequences:
        position = top_left(frames)
        assert position.min() >= 0 and position.max() <= FREE
        step = np.diff(position, axis=0)
        assert np.abs(step).max() <= 4  # |v| = 3.6 px, less than 1 px lost to truncation
        at_wall = ((position == 0) | (position == FREE)).any(axis=1)
        free_steps = ~(at_wall[:-1] | at_wall[1:])
        length = np.hypot(step[free_steps, 0], step[free_steps, 1])
        assert (np.abs(length - 3.6) < math.sqrt(2)).all()
        for axis in range(2):
            reversed_at = np.flatnonzero(step[:-1, axis] * step[1:, axis] < 0) + 1
            assert np.isin(position[reversed_at, axis], (0, FREE)).all()
            flips += len(reversed_at)
    assert flips >= 8  # 60 frames of 3.6 px cross a 36 px range several times


def test_overlapping_digits_combine_by_maximum():
    digits = solid_digits(4)
    sequences = make_moving_mnist(digits, 10, num_frames=8, digits_per_sequence=2, seed=2)
    paths = moving_mnist_trajectories(10, num_digits=4, digit_shape=(28, 28), num_frames=8, seed=2)
    expected = np.zeros_like(sequences)
    for s in range(10):
        for t in range(8):
            for d in range(2):
                top, left = paths.top[s, t, d], paths.left[s, t, d]
                patch = expected[s, t, 0, top : top + 28, left : left + 28]
                np.maximum(patch, digits[paths.digit[s, d], 0], out=patch)
    assert np.array_equal(sequences, expected)
    alone = [
        render_moving_mnist(digits, Trajectories(paths.digit[:, [d]], paths.top[:, :, [d]], paths.left[:, :, [d]]), 64)
        for d in range(2)
    ]
    both = (alone[0] > 0) & (alone[1] > 0)
    assert both.sum() > 1000  # 28 px digits in 64 px overlap: the test compares something
    assert np.array_equal(sequences, np.maximum(*alone))


def test_trajectories_follow_srivastavas_loop():
    """A literal port of moving_mnist.py's GetRandomTrajectory, fed the same random numbers."""
    paths = moving_mnist_trajectories(
        3, num_digits=7, digit_shape=(28, 28), num_frames=40, digits_per_sequence=2, seed=11
    )
    uniforms = np.random.default_rng(11).random((3, 2, 4))
    for s in range(3):
        for d in range(2):
            _, y, x, turn = uniforms[s, d]
            theta = turn * 2 * np.pi
            v_y, v_x = np.sin(theta), np.cos(theta)
            for t in range(40):
                y += v_y * 0.1
                x += v_x * 0.1
                if x <= 0:
                    x, v_x = 0, -v_x
                if x >= 1.0:
                    x, v_x = 1.0, -v_x
                if y <= 0:
                    y, v_y = 0, -v_y
                if y >= 1.0:
                    y, v_y = 1.0, -v_y
                assert (paths.top[s, t, d], paths.left[s, t, d]) == (int(FREE * y), int(FREE * x))


def test_make_moving_mnist_refuses_bad_arguments():
    with pytest.raises(ValueError, match="do not fit a 16 px"):
        make_moving_mnist(solid_digits(2), 1, size=16)
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        make_moving_mnist(solid_digits(2), 1, num_frames=0)
    with pytest.raises(ValueError, match=r"\(N, 1, h, w\)"):
        make_moving_mnist(solid_digits(2)[:, 0], 1)


def test_a_moving_mnist_source_reads_an_idx_file(tiny_idx):
    source = f"moving-mnist:{tiny_idx}?frames=12&size=48&count=5&seed=3"
    dataset = read_source(source)
    assert dataset.kind == "sequences" and dataset.source == source
    assert dataset.data.shape == (5, 12, 1, 48, 48)
    assert not is_store_ref(source)
    pinned = f"moving-mnist:{tiny_idx}?count=100@0123456789ab"
    assert split_pinned(pinned) == (f"moving-mnist:{tiny_idx}?count=100", "0123456789ab")
    assert not is_store_ref(pinned)


@pytest.mark.parametrize(
    "query, named",
    [
        ("?colour=1", r"unknown key 'colour' \(accepted: frames, size, digits, count, seed\)"),
        ("?frames=ten", "frames must be an integer from 1 to 1000, got 'ten'"),
        ("?count=0", "count must be an integer"),
        ("?seed", "seed must be an integer"),
        ("?size=16", "size=16 is smaller than the 28x28 px digits"),
        ("?count=2&count=3", "count given twice"),
    ],
)
def test_a_bad_query_is_refused_naming_the_key(tiny_idx, query, named):
    with pytest.raises(DataError, match=named):
        read_source(f"moving-mnist:{tiny_idx}{query}")


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(DataError, match="file not found: .*nowhere-idx3-ubyte"):
        read_source(f"moving-mnist:{tmp_path / 'nowhere-idx3-ubyte'}")


def test_the_published_npy_layout_is_frames_first(tmp_path):
    frames_first = np.random.default_rng(0).integers(0, 256, (4, 3, 64, 64), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, frames_first)
    whole = read_source(str(path))
    assert whole.kind == "sequences" and whole.data.shape == (3, 4, 1, 64, 64)
    assert np.array_equal(whole.data[:, :, 0], frames_first.transpose(1, 0, 2, 3))
    first_two = read_source(f"moving-mnist:{path}?count=2")
    assert first_two.data.shape == (2, 4, 1, 64, 64)
    assert np.array_equal(first_two.data, whole.data[:2])
    with pytest.raises(DataError, match=r"unknown key 'frames' \(accepted: count\)"):
        read_source(f"moving-mnist:{path}?frames=2")
    with pytest.raises(DataError, match="count=5 but the file holds 3 sequences"):
        read_source(f"moving-mnist:{path}?count=5")


def test_ingest_publishes_a_moving_mnist_source_as_sequences(tiny_idx, tmp_path, monkeypatch):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    source = f"moving-mnist:{tiny_idx}?count=20&frames=6&size=32"
    result = CliRunner().invoke(app, ["ingest", source, "--name", "moving-mnist", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sum(payload["counts"].values()) == 20 and payload["rejected"] == []
    version = resolve_version(f"moving-mnist@{payload['version']}")
    assert version.manifest["kind"] == "sequences"
    assert version.manifest["record_shape"] == [6, 1, 32, 32]
