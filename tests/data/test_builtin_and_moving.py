import numpy as np
import pytest

from genimg.data import make_moving_digits, read_source


def test_builtin_digits_are_the_1797_real_digits_at_16px(digits):
    dataset = read_source("builtin:digits")
    assert dataset.data.shape == (1797, 1, 16, 16) and dataset.data.dtype == np.uint8
    assert sorted(set(dataset.labels.tolist())) == list(range(10))
    assert dataset.data.max() == 255 and dataset.data.min() == 0
    assert not dataset.rejected


def test_builtin_moving_digits_are_2_digits_in_32px_over_10_frames():
    dataset = read_source("builtin:moving-digits")
    assert dataset.kind == "sequences"
    assert dataset.data.shape == (2000, 10, 1, 32, 32)
    assert np.array_equal(dataset.data, read_source("builtin:moving-digits").data)


def test_moving_digits_are_deterministic_by_seed(digits):
    a = make_moving_digits(digits[:50], 8, num_frames=5, seed=3)
    assert np.array_equal(a, make_moving_digits(digits[:50], 8, num_frames=5, seed=3))
    assert not np.array_equal(a, make_moving_digits(digits[:50], 8, num_frames=5, seed=4))


def test_a_bouncing_digit_never_leaves_the_canvas_and_moves(digits):
    digit = digits[7:8]
    sequences = make_moving_digits(
        digit, 20, num_frames=30, canvas_size=24, digits_per_sequence=1, min_speed=2.0, max_speed=3.0, seed=0
    )
    mass = sequences.reshape(20, 30, -1).astype(np.int64).sum(-1)
    assert (mass == int(digit.astype(np.int64).sum())).all()  # the whole digit, every frame
    moved = np.abs(np.diff(sequences.astype(np.int16), axis=1)).sum(axis=(2, 3, 4)) > 0
    assert moved.mean() > 0.8  # a bounce may round back onto the same pixel now and then


def test_moving_digits_refuse_digits_larger_than_the_canvas(digits):
    with pytest.raises(ValueError, match="do not fit"):
        make_moving_digits(digits[:2], 1, canvas_size=8)
