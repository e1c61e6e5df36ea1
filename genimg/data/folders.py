"""Folders of image files: flat, with class subfolders (→ labels), or of sequences.

Images: PNG / JPEG (and the other formats Pillow decodes). Each file is decoded in full, so a
truncated or corrupt file is rejected with Pillow's reason and the read goes on.
Sequences: one subfolder per sequence, its frames in natural name order (frame2 < frame10).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genimg.data.dataset import UNLABELLED, Dataset, Rejection, no_valid_records
from genimg.data.normalize import check_side, stack_images
from genimg.errors import DataError

Progress = Callable[[int, int], None]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


DIGITS = re.compile(r"(\d+)")
# Decoding runs in this many forked processes for folders of at least PARALLEL_MIN_FILES files
# (GENIMG_DECODE_WORKERS=1 turns it off). Small PNGs cost more Python than decoding, so threads
# would not help; processes do.
PARALLEL_MIN_FILES = 2000
CHUNK_FILES = 500


def natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in DIGITS.split(path.name)]


def scan(folder: Path, want_dirs: bool) -> list[Path]:
    with os.scandir(folder) as entries:
        found = [
            Path(entry.path) for entry in entries
            if not entry.name.startswith(".")
            and (entry.is_dir() if want_dirs else entry.is_file())
        ]
    return sorted(found, key=natural_key)


def visible_files(folder: Path) -> list[Path]:
    return scan(folder, want_dirs=False)


def visible_dirs(folder: Path) -> list[Path]:
    return scan(folder, want_dirs=True)


def decode_workers() -> int:
    configured = os.environ.get("GENIMG_DECODE_WORKERS")
    if configured is not None:
        return max(1, int(configured))
    return min(os.cpu_count() or 1, 8)


def decode_chunk(paths: list[Path]) -> list[np.ndarray | str]:
    return [decode_image(path) for path in paths]


def decode_all(paths: list[Path], progress: Progress | None = None) -> list[np.ndarray | str]:
    """decode_image over `paths`, in order; in parallel processes for large folders."""
    chunks = [paths[i : i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    workers = decode_workers()
    results: list[np.ndarray | str] = []
    if len(paths) >= PARALLEL_MIN_FILES and workers > 1 and "fork" in mp.get_all_start_methods():
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for decoded in pool.map(decode_chunk, chunks):
                results += decoded
                if progress is not None:
                    progress(len(results), len(paths))
        return results
    for chunk in chunks:
        results += decode_chunk(chunk)
        if progress is not None:
            progress(len(results), len(paths))
    return results


def decode_image(path: Path) -> np.ndarray | str:
    """(H, W, C) uint8 with C in {1, 3}, or the reason it cannot be used."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (extension {path.suffix or 'none'!s})"
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I", "I;16", "F"):
                return f"unsupported image mode {image.mode} (expected 8-bit grey or colour)"
            if image.mode in GREY_MODES:
                grey = image if image.mode == "L" else image.convert("L")
                decoded = np.asarray(grey)[:, :, None]
            else:
                decoded = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except UnidentifiedImageError:
        return "not a decodable image (unknown or corrupt format)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt image: {exc}"
    except Image.DecompressionBombError as exc:
        return f"refused: {exc}"
    side_problem = check_side(*decoded.shape[:2])
    return side_problem if side_problem else decoded


def image_files_under(folder: Path) -> list[Path]:
    """Every visible file below `folder`, at any depth, in natural order of its path."""
    files = [
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: [natural_key(Path(part)) for part in p.relative_to(folder).parts])


def read_image_folder(folder: Path, progress: Progress | None = None) -> Dataset:
    classes = [d for d in visible_dirs(folder) if image_files_under(d)]
    class_names = [d.name for d in classes] or None
    entries: list[tuple[Path, int]] = [(p, UNLABELLED) for p in visible_files(folder)]
    for index, class_dir in enumerate(classes):
        entries += [(p, index) for p in image_files_under(class_dir)]
    if not entries:
        raise DataError(f"{folder}: empty folder (no files)")
    images, labels, rejected = [], [], []
    for (path, label), decoded in zip(entries, decode_all([p for p, _ in entries], progress)):
        if isinstance(decoded, str):
            rejected.append(Rejection(str(path), decoded))
        else:
            images.append(decoded)
            labels.append(label)
    if not images:
        raise no_valid_records(str(folder), "images", rejected)
    return Dataset(
        kind="images",
        data=stack_images(images),
        source=str(folder),
        labels=np.asarray(labels, np.int64) if class_names else None,
        class_names=class_names,
        rejected=rejected,
    )


def read_sequence_folder(folder: Path, progress: Progress | None = None) -> Dataset:
    sequence_dirs = visible_dirs(folder)
    if not sequence_dirs:
        raise DataError(f"{folder}: no sequence subfolders (one folder of frames per sequence)")
    rejected = [Rejection(str(p), "not a sequence folder (a file beside the sequences)")
                for p in visible_files(folder)]
    decoded_sequences: list[tuple[Path, list[np.ndarray]]] = []
    for done, sequence_dir in enumerate(sequence_dirs, 1):
        if progress is not None and (done % 64 == 0 or done == len(sequence_dirs)):
            progress(done, len(sequence_dirs))
        frames, problem = [], None
        for frame_path in visible_files(sequence_dir):
            decoded = decode_image(frame_path)
            if isinstance(decoded, str):
                problem = f"frame {frame_path.name}: {decoded}"
                break
            frames.append(decoded)
        if problem is None and not frames:
            problem = "no frames"
        if problem:
            rejected.append(Rejection(str(sequence_dir), problem))
        else:
            decoded_sequences.append((sequence_dir, frames))
    if not decoded_sequences:
        raise no_valid_records(str(folder), "sequences", rejected)
    lengths = Counter(len(frames) for _, frames in decoded_sequences)
    length = max(lengths, key=lambda n: (lengths[n], n))
    kept = []
    for sequence_dir, frames in decoded_sequences:
        if len(frames) != length:
            rejected.append(
                Rejection(str(sequence_dir), f"{len(frames)} frames; this dataset's sequences have {length}")
            )
        else:
            kept.append(frames)
    flat = stack_images([frame for frames in kept for frame in frames])
    data = flat.reshape(len(kept), length, *flat.shape[1:])
    return Dataset(kind="sequences", data=data, source=str(folder), rejected=rejected)
