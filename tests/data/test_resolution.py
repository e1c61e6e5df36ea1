"""`ingest --resolution N [--resize center-crop|pad|stretch]`: real photo folders of mixed sizes,
aspect ratios and pixel modes become one square size, with correct colours; and the pixel modes
that every read decodes (grey, alpha, palette, 16-bit, CMYK, EXIF-rotated)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genimg.cli import app
from genimg.data import read_source
from genimg.data.folders import decode_image
from genimg.data.normalize import ResizePolicy
from genimg.data.versions import ingest_dataset, plan_splits
from genimg.store import LocalStore

RED, GREEN, BLUE = (255, 0, 0), (0, 160, 0), (0, 0, 255)


def solid(width: int, height: int, colour: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (width, height), colour)


def bands(width: int, height: int, colours: list[tuple[int, int, int]]) -> Image.Image:
    """Vertical bands of equal width, left to right."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(colours):
        pixels[:, i * width // len(colours) : (i + 1) * width // len(colours)] = colour
    return Image.fromarray(pixels)


def save_rotated_jpeg(path: Path) -> None:
    """Stored 60 wide × 30 high, red above blue, EXIF orientation 6 (turn 90° clockwise): upright
    it is 30 wide × 60 high, blue on the left and red on the right."""
    pixels = np.zeros((30, 60, 3), np.uint8)
    pixels[:15] = RED
    pixels[15:] = BLUE
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=95)


def make_mixed_folder(root: Path) -> Path:
    """Two classes of photos of mixed sizes, aspect ratios and modes; files sort a_, b_, …"""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    solid(40, 20, (*RED, 255), "RGBA").save(root / "cats" / "a_rgba.png")
    Image.fromarray(np.full((50, 30), 65535, np.uint16)).save(root / "cats" / "b_grey16.png")
    palette = Image.new("P", (25, 25), 1)
    palette.putpalette([0, 0, 0, *GREEN] + [0] * 762)
    palette.save(root / "cats" / "c_palette.png")
    solid(64, 48, BLUE).convert("CMYK").save(root / "dogs" / "a_cmyk.jpg", quality=95)
    solid(20, 60, 100, "L").save(root / "dogs" / "b_grey.png")
    save_rotated_jpeg(root / "dogs" / "c_rotated.jpg")
    solid(16, 16, RED).save(root / "dogs" / "d_rgb.png")
    return root


def centre(record: np.ndarray) -> np.ndarray:
    _, height, width = record.shape
    return record[:, height // 2, width // 2].astype(int)


def close(pixel: np.ndarray, expected: tuple[int, ...], tolerance: int = 3) -> bool:
    return bool(np.abs(pixel - np.asarray(expected)).max() <= tolerance)


def test_a_mixed_folder_becomes_one_square_shape_with_correct_colours_and_labels(tmp_path):
    dataset = read_source(str(make_mixed_folder(tmp_path / "photos")), resize=ResizePolicy(8))
    assert dataset.rejected == []
    assert dataset.data.shape == (7, 3, 8, 8)
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert dataset.class_names == ["cats", "dogs"]
    rgba, grey16, palette, cmyk, grey, rotated, rgb = dataset.data
    assert close(centre(rgba), RED)
    assert close(centre(grey16), (255, 255, 255))  # 65535 scaled to 255, not clipped
    assert close(centre(palette), GREEN)
    assert close(centre(cmyk), BLUE, tolerance=12)  # through JPEG
    assert close(centre(grey), (100, 100, 100))
    assert close(rotated[:, 4, 1].astype(int), BLUE, tolerance=40)  # upright: blue left,
    assert close(rotated[:, 4, 6].astype(int), RED, tolerance=40)  # red right
    assert close(centre(rgb), RED)


def test_without_resolution_the_mixed_modes_still_decode_to_correct_pixels(tmp_path):
    folder = make_mixed_folder(tmp_path / "photos")
    dataset = read_source(str(folder))
    assert dataset.rejected == [] and dataset.data.shape[:2] == (7, 3)  # 16-bit is no longer refused
    assert decode_image(folder / "cats" / "b_grey16.png").shape == (50, 30, 1)


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped(tmp_path):
    levels = np.array([0, 257, 32896, 65278, 65535], np.uint16)  # 0, 1, 128, 254, 255 × 257
    Image.fromarray(np.tile(levels, (4, 1))).save(tmp_path / "g.png")
    decoded = decode_image(tmp_path / "g.png")
    assert decoded.dtype == np.uint8 and decoded[0, :, 0].tolist() == [0, 1, 128, 254, 255]


def test_alpha_is_composited_onto_black(tmp_path):
    solid(8, 8, (*RED, 128), "RGBA").save(tmp_path / "half-red.png")
    solid(8, 8, (200, 128), "LA").save(tmp_path / "half-grey.png")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([*GREEN, *RED] + [0] * 762)
    palette.save(tmp_path / "transparent-index.png", transparency=1)
    solid(8, 8, (1, 2, 3)).save(tmp_path / "transparent-colour.png", transparency=(1, 2, 3))
    assert decode_image(tmp_path / "half-red.png")[4, 4].tolist() == [128, 0, 0]
    assert decode_image(tmp_path / "half-grey.png")[4, 4].tolist() == [100]
    assert decode_image(tmp_path / "transparent-index.png")[4, 4].tolist() == [0, 0, 0]
    assert decode_image(tmp_path / "transparent-colour.png")[4, 4].tolist() == [0, 0, 0]
    resized = decode_image(tmp_path / "half-red.png", ResizePolicy(4))
    assert resized.shape == (4, 4, 3) and resized[2, 2].tolist() == [128, 0, 0]


def test_a_cmyk_jpeg_becomes_rgb(tmp_path):
    solid(16, 16, RED).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    decoded = decode_image(tmp_path / "c.jpg")
    assert decoded.shape == (16, 16, 3) and close(decoded[8, 8].astype(int), RED, tolerance=12)


def test_center_crop_keeps_the_centre_pad_letterboxes_and_stretch_keeps_everything(tmp_path):
    bands(60, 20, [RED, GREEN, BLUE]).save(tmp_path / "wide.png")
    path = tmp_path / "wide.png"
    cropped = decode_image(path, ResizePolicy(10, "center-crop"))
    assert cropped.shape == (10, 10, 3)
    assert all(close(cropped[row, col].astype(int), GREEN, 8) for row in range(10) for col in range(2, 8))
    padded = decode_image(path, ResizePolicy(12, "pad"))  # 60×20 → 12×4, rows 4–7
    assert padded.shape == (12, 12, 3)
    assert padded[:4].max() == 0 and padded[8:].max() == 0  # black bars above and below
    assert close(padded[5, 1].astype(int), RED, 8) and close(padded[5, 10].astype(int), BLUE, 8)
    stretched = decode_image(path, ResizePolicy(12, "stretch"))
    assert stretched.shape == (12, 12, 3)
    assert close(stretched[0, 1].astype(int), RED, 8) and close(stretched[11, 10].astype(int), BLUE, 8)
    assert close(stretched[6, 6].astype(int), GREEN, 8)


def test_a_large_jpeg_decoded_at_reduced_size_matches_a_full_decode(tmp_path):
    # Colour patches 2–3 output px wide: a decode at 1/8 scale (8×8 block averages) so close to
    # the target as Image.thumbnail's would alias them (15 levels off here); ours stays within 3.
    patches = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(patches).resize((800, 600), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=95)
    fast = decode_image(tmp_path / "big.jpg", ResizePolicy(16))
    with Image.open(tmp_path / "big.jpg") as full:
        reference = np.asarray(full.convert("RGB").crop((100, 0, 700, 600)).resize((16, 16), Image.Resampling.LANCZOS))
    assert fast.shape == (16, 16, 3)
    assert np.abs(fast.astype(int) - reference.astype(int)).max() <= 3


def test_parallel_decode_resizes_in_the_workers_with_the_same_result(tmp_path, monkeypatch):
    import genimg.data.folders as folders

    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        bands(20 + i, 30 - i, [RED, (i * 20, i * 10, 0), BLUE]).save(root / f"{i}.png")
    monkeypatch.setattr(folders, "PARALLEL_MIN_FILES", 4)
    monkeypatch.setattr(folders, "CHUNK_FILES", 3)
    monkeypatch.setenv("GENIMG_DECODE_WORKERS", "2")
    parallel = read_source(str(root), resize=ResizePolicy(8, "pad"))
    monkeypatch.setenv("GENIMG_DECODE_WORKERS", "1")
    sequential = read_source(str(root), resize=ResizePolicy(8, "pad"))
    assert parallel.data.shape == (12, 3, 8, 8) and np.array_equal(parallel.data, sequential.data)


def test_sources_that_are_not_folders_are_resized_too(digits):
    dataset = read_source("builtin:digits", resize=ResizePolicy(32))
    assert dataset.data.shape == (len(digits), 1, 32, 32)
    assert read_source("builtin:digits").data.shape == digits.shape  # the default is untouched


def test_the_resize_policy_is_part_of_the_version_and_reruns_are_stable(tmp_path):
    folder = make_mixed_folder(tmp_path / "photos")
    store = LocalStore(tmp_path / "store")
    policies = [None, ResizePolicy(8), ResizePolicy(8, "pad"), ResizePolicy(8, "stretch"), ResizePolicy(16)]
    versions = [
        ingest_dataset(read_source(str(folder), resize=policy), "photos", store=store, resize=policy).version
        for policy in policies
    ]
    assert len(set(versions)) == len(policies)
    rerun = ingest_dataset(
        read_source(str(folder), resize=ResizePolicy(8)), "photos", store=store, resize=ResizePolicy(8)
    )
    assert rerun.version == versions[1] and rerun.reused


def test_the_same_pixels_under_another_policy_get_another_version(tmp_path):
    # Square 8×8 images come out of center-crop to 8 unchanged: only the policy tells them apart.
    folder = tmp_path / "squares"
    folder.mkdir()
    for i in range(5):
        solid(8, 8, (i * 40, 0, 0)).save(folder / f"{i}.png")
    plain, cropped = read_source(str(folder)), read_source(str(folder), resize=ResizePolicy(8))
    assert np.array_equal(plain.data, cropped.data)
    assert plan_splits(plain).version != plan_splits(cropped, ResizePolicy(8)).version
    assert plan_splits(cropped, ResizePolicy(8)).preprocessing["resize"] == {"resolution": 8, "mode": "center-crop"}
    assert "resize" not in plan_splits(plain).preprocessing


def test_todays_policy_keeps_its_version_ids(digits):
    assert plan_splits(read_source("builtin:digits")).version == "291043e66cae"


def test_a_dataset_of_another_size_is_not_published_under_a_resize_policy(tmp_path):
    from genimg.errors import DataError

    with pytest.raises(DataError, match="16x16"):
        ingest_dataset(read_source("builtin:digits"), "digits", store=LocalStore(tmp_path), resize=ResizePolicy(8))


# --- the command line ------------------------------------------------------------------------------

runner = CliRunner()


def test_ingest_resolution_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    folder = str(make_mixed_folder(tmp_path / "photos"))
    first = runner.invoke(app, ["ingest", folder, "--name", "photos", "--resolution", "8", "--resize", "pad", "--json"])
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert sum(payload["counts"].values()) == 7 and payload["rejected"] == []
    manifest = json.loads(
        (tmp_path / "store" / "datasets" / "photos" / payload["version"] / "manifest.json").read_text()
    )
    assert manifest["record_shape"] == [3, 8, 8] and manifest["class_names"] == ["cats", "dogs"]
    assert manifest["preprocessing"]["resize"] == {"resolution": 8, "mode": "pad"}
    default_mode = runner.invoke(app, ["ingest", folder, "--name", "photos", "--resolution", "8", "--json"])
    assert json.loads(default_mode.stdout)["version"] != payload["version"]
    again = runner.invoke(app, ["ingest", folder, "--name", "photos", "--resolution", "8", "--resize", "pad", "--json"])
    assert json.loads(again.stdout)["version"] == payload["version"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--resolution", "3"], "invalid --resolution 3 (must be 4–4096)"),
        (["--resolution", "5000"], "invalid --resolution 5000 (must be 4–4096)"),
        (
            ["--resolution", "8", "--resize", "squash"],
            "invalid --resize 'squash' (expected center-crop, pad or stretch)",
        ),
        (["--resize", "pad"], "--resize pad needs --resolution N"),
    ],
)
def test_bad_resize_options_are_one_line_errors(tmp_path, monkeypatch, options, message):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    result = runner.invoke(app, ["ingest", "builtin:digits", "--name", "digits", *options])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
