"""Sources that fight back: rotated photos, symlinks out of the folder, decompression bombs,
a reader killed mid-decode, temporaries left by a killed ingest."""

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from genimg.data import read_source
from genimg.data.versions import ingest_dataset, plan_splits, resolve_version
from genimg.errors import DataError
from genimg.store import open_store

# --- EXIF orientation ----------------------------------------------------------------------------

# Orientation 6: the camera was turned clockwise, so the stored pixels must be turned 90°
# clockwise to stand upright (np.rot90 k=-1); 8: the other way.
TURNS = {6: -1, 8: 1}


def gradient(height: int, width: int) -> np.ndarray:
    """A non-square grey image that no rotation or flip maps onto itself."""
    rows, cols = np.mgrid[0:height, 0:width]
    return (rows * 20 + cols * 3).astype(np.uint8)


def save_with_orientation(path: Path, pixels: np.ndarray, orientation: int, **options) -> None:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation  # Orientation
    image.save(path, exif=exif, **options)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied_to_png(tmp_path, orientation):
    stored = gradient(6, 10)
    (tmp_path / "photos").mkdir()
    save_with_orientation(tmp_path / "photos" / "p.png", stored, orientation)
    dataset = read_source(str(tmp_path / "photos"))
    assert dataset.data.shape == (1, 1, 10, 6)
    assert np.array_equal(dataset.data[0, 0], np.rot90(stored, TURNS[orientation]))


def test_a_jpeg_rotated_by_exif_ingests_upright(tmp_path):
    stored = gradient(8, 12)
    (tmp_path / "photos").mkdir()
    save_with_orientation(tmp_path / "photos" / "p.jpg", stored, 6, quality=100)
    dataset = read_source(str(tmp_path / "photos"))
    assert dataset.data.shape == (1, 1, 12, 8)
    difference = dataset.data[0, 0].astype(int) - np.rot90(stored, -1)
    assert np.abs(difference).mean() < 2  # JPEG is lossy, but not sideways


# --- symlinks ------------------------------------------------------------------------------------

POINTS_OUTSIDE = "points outside the source folder"


def png(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


@pytest.fixture
def opened(monkeypatch):
    """The paths Pillow is asked to open, in this process."""
    import genimg.data.folders as folders

    paths: list[Path] = []
    real_open = folders.Image.open

    def recording_open(path, *args, **kwargs):
        paths.append(Path(path).resolve())
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(folders.Image, "open", recording_open)
    return paths


def test_symlinks_out_of_an_image_folder_are_rejected_and_never_opened(tmp_path, opened):
    outside = tmp_path / "outside"
    png(outside / "secret.png", 7)
    png(outside / "class" / "o.png", 8)
    root = tmp_path / "imgs"
    png(root / "a" / "1.png", 1)
    png(root / "a" / "deep" / "2.png", 2)
    png(root / "top.png", 3)
    (root / "same.png").symlink_to(root / "top.png")  # inside: followed
    (root / "secret.png").symlink_to(outside / "secret.png")
    (root / "passwd.png").symlink_to("/etc/passwd")
    (root / "gone.png").symlink_to(root / "nowhere.png")
    (root / "b").symlink_to(outside / "class")  # an outside folder: never a class
    (root / "c").symlink_to(root / "a")  # an inside folder: a class like any other
    (root / "a" / "deep" / "out.png").symlink_to(outside / "secret.png")
    (root / "a" / "deep" / "loop").symlink_to(root)  # must not be walked for ever

    dataset = read_source(str(root))

    assert dataset.class_names == ["a", "c"]
    # same.png, top.png, then a/1.png, a/deep/2.png, then c/1.png, c/deep/2.png
    assert dataset.labels.tolist() == [-1, -1, 0, 0, 1, 1]
    assert sorted(dataset.data[:, 0, 0, 0].tolist()) == [1, 1, 2, 2, 3, 3]
    reasons = {Path(r.item).relative_to(root).as_posix(): r.reason for r in dataset.rejected}
    assert set(reasons) == {
        "secret.png",
        "passwd.png",
        "gone.png",
        "b",
        "a/deep/out.png",
        "a/deep/loop",
        "c/deep/out.png",
        "c/deep/loop",
    }
    assert reasons["secret.png"] == f"symlink → {outside / 'secret.png'} {POINTS_OUTSIDE}"
    assert reasons["passwd.png"] == f"symlink → /etc/passwd {POINTS_OUTSIDE}"
    assert reasons["b"] == f"symlink → {outside / 'class'} {POINTS_OUTSIDE}"
    assert reasons["gone.png"] == f"dangling symlink → {root / 'nowhere.png'}"
    assert reasons["a/deep/loop"].startswith("symlink loop")
    assert opened and all(path.is_relative_to(root) for path in opened)

    # The folder itself given as a link is fine: what counts is where its entries lead.
    (tmp_path / "alias").symlink_to(root)
    through_alias = read_source(str(tmp_path / "alias"))
    assert np.array_equal(through_alias.data, dataset.data)
    assert len(through_alias.rejected) == len(dataset.rejected)


def test_a_folder_of_nothing_but_bad_links_names_the_first_one(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "x.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(DataError, match=r"1 item\(s\) rejected, first .*x.png: dangling symlink"):
        read_source(str(root))


def test_symlinks_out_of_a_sequence_folder_are_rejected(tmp_path, opened):
    outside = tmp_path / "outside"
    for t in range(3):
        png(outside / "seq" / f"f{t}.png", 9)
    root = tmp_path / "seqs"
    for name in ("s0", "s2", "s3"):
        for t in range(3):
            png(root / name / f"f{t}.png", t)
    (root / "s1").symlink_to(outside / "seq")
    (root / "s2" / "f2.png").unlink()
    (root / "s2" / "f2.png").symlink_to(outside / "seq" / "f2.png")
    (root / "s3" / "f2.png").unlink()
    (root / "s3" / "f2.png").symlink_to(root / "s3" / "gone.png")
    (root / "s4").symlink_to(root / "s0")  # inside: a sequence like any other
    (root / "s5").symlink_to(root)

    dataset = read_source(str(root), kind="sequences")

    assert dataset.data.shape == (2, 3, 1, 8, 8)
    reasons = {Path(r.item).name: r.reason for r in dataset.rejected}
    assert set(reasons) == {"s1", "s2", "s3", "s5"}
    assert reasons["s1"] == f"symlink → {outside / 'seq'} {POINTS_OUTSIDE}"
    assert reasons["s2"] == f"frame f2.png: symlink → {outside / 'seq' / 'f2.png'} {POINTS_OUTSIDE}"
    assert reasons["s3"] == f"frame f2.png: dangling symlink → {root / 's3' / 'gone.png'}"
    assert reasons["s5"].startswith("symlink loop")
    assert all(path.is_relative_to(root) for path in opened)


# --- memory bombs (peak RSS measured in a fresh process) ----------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    from genimg.data import read_source
    from genimg.errors import DataError

    def peak_rss_mb():
        # VmHWM: this process's own peak (ru_maxrss can carry the parent's across fork + exec).
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024

    before = peak_rss_mb()
    try:
        dataset = read_source(sys.argv[1])
        outcome = {"records": len(dataset), "rejected": [r.as_dict() for r in dataset.rejected]}
    except DataError as exc:
        outcome = {"error": str(exc)}
    print(json.dumps({**outcome, "grew_mb": peak_rss_mb() - before}))
    """
)
# Decoding the bombs below takes 150+ MB; refusing them from their headers takes next to nothing.
GROWTH_LIMIT_MB = 40


needs_proc = pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/status")


def read_in_fresh_process(source: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout), done.stderr


@needs_proc
def test_an_image_bomb_is_refused_from_its_header(tmp_path):
    root = tmp_path / "imgs"
    png(root / "fine.png", 5)
    # 10000×10000 px of zeros: about 100 KB as PNG, 100 MB decoded (and copied into an array).
    Image.new("L", (10_000, 10_000)).save(root / "bomb.png")
    # 24.6 Mpx: inside Pillow's hard limit (2 × MAX_IMAGE_PIXELS), so the policy check refuses it.
    Image.new("L", (4_100, 6_000)).save(root / "wide.png")
    assert (root / "bomb.png").stat().st_size < 1_000_000

    outcome, stderr = read_in_fresh_process(root)

    assert outcome["grew_mb"] < GROWTH_LIMIT_MB, outcome
    assert outcome["records"] == 1
    reasons = {Path(r["item"]).name: r["reason"] for r in outcome["rejected"]}
    assert set(reasons) == {"bomb.png", "wide.png"}
    assert reasons["bomb.png"].startswith("odd shape: Image size (100000000 pixels)")
    assert reasons["wide.png"] == "odd shape: 6000x4100 px (sides must be 4–4096 px)"
    assert "DecompressionBombWarning" not in stderr


def write_gzip_idx(path: Path, shape: tuple[int, ...], records: bytes, trailing_zeros: int) -> None:
    """A gzip IDX file: a uint8 header declaring `shape`, `records`, then `trailing_zeros` zero
    bytes, compressed as they are generated (never held in memory whole)."""
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 24)
    with open(path, "wb") as out:
        out.write(compressor.compress(header + records))
        for start in range(0, trailing_zeros, len(zeros)):
            out.write(compressor.compress(zeros[: trailing_zeros - start]))
        out.write(compressor.flush())


@needs_proc
def test_a_gzip_idx_bomb_inflates_only_the_records_its_header_declares(tmp_path, digits):
    images = np.zeros((10, 28, 28), np.uint8)
    images[:, 6:22, 6:22] = digits[:10, 0]
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    write_gzip_idx(path, (10, 28, 28), images.tobytes(), trailing_zeros=256 << 20)
    assert path.stat().st_size < 2_000_000  # 256 MiB inflated

    outcome, _ = read_in_fresh_process(path)

    assert outcome["grew_mb"] < GROWTH_LIMIT_MB, outcome
    assert outcome["records"] == 10 and outcome["rejected"] == []
    assert np.array_equal(read_source(str(path)).data[:, 0], images)


@needs_proc
def test_an_idx_header_with_huge_sides_fails_before_reading_records(tmp_path):
    path = tmp_path / "huge-images-idx3-ubyte.gz"
    write_gzip_idx(path, (10, 5000, 5000), b"", trailing_zeros=256 << 20)

    outcome, _ = read_in_fresh_process(path)

    assert outcome["grew_mb"] < GROWTH_LIMIT_MB, outcome
    assert outcome["error"] == f"{path}: odd shape: 5000x5000 px (sides must be 4–4096 px)"


# --- a parallel read killed mid-decode -----------------------------------------------------------

READ_FOLDER = "import sys; from genimg.data import read_source; read_source(sys.argv[1])"


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_decode_workers_die_with_a_killed_reader(tmp_path, digits):
    from genimg.data.folders import PARALLEL_MIN_FILES

    root = tmp_path / "many"
    root.mkdir()
    for i in range(PARALLEL_MIN_FILES + 500):
        Image.fromarray(digits[i % len(digits), 0]).save(root / f"{i}.png")
    reader = subprocess.Popen(
        [sys.executable, "-c", READ_FOLDER, str(root)], env={**os.environ, "GENIMG_DECODE_WORKERS": "2"}
    )
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and reader.poll() is None and time.monotonic() < deadline:
            workers = psutil.Process(reader.pid).children()
            time.sleep(0.01)
        assert len(workers) >= 2 and reader.poll() is None, "the pool never started"
        os.kill(reader.pid, signal.SIGKILL)  # mid-decode: the pool lives only inside the read
        reader.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [w.pid for w in workers if alive(w)] == []
    finally:
        reader.kill()
        for worker in workers:
            if alive(worker):
                worker.kill()


# --- temporaries of a killed ingest --------------------------------------------------------------

KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from genimg.store import LocalStore

    os.replace = lambda *args: os._exit(9)  # killed after writing the temporary, before the rename
    LocalStore(Path(sys.argv[1])).put_bytes(sys.argv[2], b"half a shard")
    """
)


def test_the_next_ingest_removes_temporaries_of_killed_writers_only(tmp_path):
    dataset = read_source("builtin:digits")
    store = open_store((tmp_path / "store").as_uri())
    prefix = f"datasets/digits/{plan_splits(dataset).version}/"
    for key in ("train/part-00000.parquet", "manifest.json"):
        command = [sys.executable, "-c", KILLED_WRITER, str(store.root), prefix + key]
        killed = subprocess.run(command, timeout=60)
        assert killed.returncode == 9
    stale = sorted(p.name for p in (store.root / prefix).rglob(".*.tmp"))
    assert len(stale) == 2 and all(f".{os.getpid()}@" not in name for name in stale)
    live = store.staging_path(store.path(prefix + "train/part-00001.parquet"))  # this process's
    live.write_bytes(b"being written")
    elsewhere = live.with_name(".part-00002.parquet." + "0" * 32 + ".1@another-host.tmp")
    elsewhere.write_bytes(b"another host's writer: cannot tell, so it stays")

    result = ingest_dataset(dataset, "digits", store=store)

    left = sorted(p.name for p in (store.root / prefix).rglob(".*.tmp"))
    assert left == sorted([live.name, elsewhere.name])
    published = resolve_version(f"digits@{result.version}", store)
    assert len(published.load(("train", "val", "test"))) == 1797
