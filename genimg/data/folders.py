"""Folders of image files: flat, with class subfolders (→ labels), or of sequences.

Images: PNG / JPEG (and the other formats Pillow decodes). Each file is decoded in full, so a
truncated or corrupt file is rejected with Pillow's reason and the read goes on. Its size is
checked from the header before decoding, and its EXIF orientation is applied. Pixels come out as
8-bit grey or RGB: 16-bit grey scaled to 0–255, alpha (or a palette's or PNG's transparent colour)
composited onto black, palette, CMYK and other modes converted. Under a ResizePolicy each image is
brought to its square size as it is decoded, in the decoding process.
Sequences: one subfolder per sequence, its frames in natural name order (frame2 < frame10).
Symbolic links are followed only while they stay inside the source folder; one that leads out of
it, or nowhere, is rejected (its target is never opened).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import re
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from genimg.data.dataset import UNLABELLED, Dataset, Rejection, no_valid_records
from genimg.data.normalize import MAX_SIDE, MIN_SIDE, ResizePolicy, check_side, stack_images
from genimg.errors import DataError

Progress = Callable[[int, int], None]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
GREY_MODES = {"1", "L", "LA", "La"}
# Where Pillow's getexif finds a JPEG's or PNG's orientation (EXIF: JPEG APP1, PNG eXIf or
# ImageMagick's text chunk; XMP); a file with none of them is upright, and skipping the EXIF
# parse saves a sixth of the decode time of a small JPEG.
ORIENTATION_INFO = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")
ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}


DIGITS = re.compile(r"(\d+)")
# Decoding runs in this many forked processes for folders of at least PARALLEL_MIN_FILES files
# (GENIMG_DECODE_WORKERS=1 turns it off). Small PNGs cost more Python than decoding, so threads
# would not help; processes do.
PARALLEL_MIN_FILES = 2000
CHUNK_FILES = 500
# From the policy: Pillow refuses, in Image.open (from the header alone), images of over twice
# this many pixels and warns above it. No image the policy accepts has more, and a bomb is
# refused before a single row is decoded even by code that forgets to check the size first.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_SECONDS = 0.5


def natural_key(path: Path) -> list[object]:
    return name_key(path.name)


def name_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in DIGITS.split(name)]


@dataclass
class Listing:
    """What a folder holds: visible files and subfolders (natural order), and the rejected links."""

    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def symlink_problem(link: Path, root: Path) -> str | None:
    """Why the symlink `link` must not be followed, or None when it leads inside `root`.

    Only the link is resolved: its target is never opened, so a link to /etc/passwd or a
    device costs nothing."""
    target = os.readlink(link)
    try:
        resolved = link.resolve(strict=True)
    except FileNotFoundError:
        return f"dangling symlink → {target}"
    except RuntimeError:  # a cycle of links (Python < 3.13; later ones raise OSError ELOOP)
        return f"symlink loop → {target}"
    except OSError as exc:
        return f"unusable symlink → {target} ({exc.strerror or exc})"
    if not resolved.is_relative_to(root):
        return f"symlink → {target} points outside the source folder"
    return None


def list_folder(folder: Path, root: Path) -> Listing:
    """The visible entries of `folder`; symlinks are followed only where they stay in `root`."""
    listing = Listing()
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            problem = symlink_problem(path, root) if entry.is_symlink() else None
            if problem is not None:
                listing.rejected.append(Rejection(str(path), problem))
            elif entry.is_dir():
                listing.dirs.append(path)
            elif entry.is_file():
                listing.files.append(path)
    listing.files.sort(key=natural_key)
    listing.dirs.sort(key=natural_key)
    listing.rejected.sort(key=lambda r: natural_key(Path(r.item)))
    return listing


def files_under(folder: Path, root: Path) -> Listing:
    """Every visible file below `folder`, at any depth, in natural order of its path.

    A folder that a link leads back into (`root`, or one that holds the link) is rejected as a
    loop instead of being walked again and again."""
    found = Listing()

    def walk(current: Path, ancestors: frozenset[Path]) -> None:
        real = current.resolve()
        if real in ancestors:
            # Only a symlink can lead back up: plain folders form a tree.
            found.rejected.append(Rejection(str(current), f"symlink loop → {os.readlink(current)}"))
            return
        listing = list_folder(current, root)
        found.files += listing.files
        found.rejected += listing.rejected
        for sub in listing.dirs:
            walk(sub, ancestors | {real})

    walk(folder, frozenset({root}))
    # Every path found starts with `folder` + separator (scandir joins names onto it); plain
    # strings keep the sort of a 50,000-photo class folder cheap next to decoding it.
    start = len(str(folder)) + 1
    found.files.sort(key=lambda p: [name_key(part) for part in str(p)[start:].split(os.sep)])
    return found


def decode_workers() -> int:
    configured = os.environ.get("GENIMG_DECODE_WORKERS")
    if configured is not None:
        return max(1, int(configured))
    return min(os.cpu_count() or 1, 8)


def decode_chunk(paths: list[Path], resize: ResizePolicy | None = None) -> list[np.ndarray | str]:
    return [decode_image(path, resize) for path in paths]


def die_with_parent(parent: int) -> None:
    """Decode-worker initializer: end this worker as soon as `parent` (the reader) dies.

    A SIGKILLed reader cannot shut its pool down, and its forked workers would wait on the task
    pipe for ever (each holds a copy of its write end, so it never reports end of file)."""
    try:
        # Linux: the kernel sends SIGKILL when the forking thread ends; the pool forks all its
        # workers from the thread that then waits in decode_all, so that is the reader's end.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # no prctl here: the watcher below does it, a little later
    threading.Thread(target=exit_when_orphaned, args=(parent,), daemon=True).start()


def exit_when_orphaned(parent: int) -> None:
    # An orphan is adopted by init or a subreaper: its parent pid changes. This also covers a
    # parent that died before prctl above took effect.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def decode_all(
    paths: list[Path], progress: Progress | None = None, resize: ResizePolicy | None = None
) -> list[np.ndarray | str]:
    """decode_image over `paths`, in order; in parallel processes for large folders (which also
    resize, so only the small result of each photo comes back)."""
    chunks = [paths[i : i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    workers = decode_workers()
    results: list[np.ndarray | str] = []
    if len(paths) >= PARALLEL_MIN_FILES and workers > 1 and "fork" in mp.get_all_start_methods():
        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            for decoded in pool.map(partial(decode_chunk, resize=resize), chunks):
                results += decoded
                if progress is not None:
                    progress(len(results), len(paths))
        return results
    for chunk in chunks:
        results += decode_chunk(chunk, resize)
        if progress is not None:
            progress(len(results), len(paths))
    return results


def eight_bit(image: Image.Image) -> Image.Image | str:
    """`image` as 8-bit grey (L) or RGB pixels, or the reason it cannot be.

    16-bit grey is scaled (65535 → 255), not clipped. Alpha and transparent colours are
    composited onto black: a half-transparent red is dark red, and a transparent background
    comes out black whatever colour its hidden pixels have."""
    mode = image.mode
    if mode == "F":
        return "unsupported image mode F (floating point; expected 8- or 16-bit grey or colour)"
    if mode.startswith("I"):  # I;16, I;16B, … (16-bit grey PNG, TIFF), or I (32-bit integer)
        values = np.asarray(image)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            return f"grey values outside the 16-bit range (min {low}, max {high})"
        scaled = (values.astype(np.uint32) * 255 + 32767) // 65535  # rounded v × 255 / 65535
        return Image.fromarray(scaled.astype(np.uint8), "L")
    grey = mode in GREY_MODES
    if mode in ALPHA_MODES or "transparency" in image.info:
        # LA / RGBA with straight alpha; Pillow turns a palette's or a PNG's transparent colour
        # (the info "transparency") into alpha too.
        pixels = np.asarray(image.convert("LA" if grey else "RGBA")).astype(np.uint16)
        colour, alpha = pixels[:, :, :-1], pixels[:, :, -1:]
        over_black = ((colour * alpha + 127) // 255).astype(np.uint8)  # rounded colour × α
        return Image.fromarray(over_black[:, :, 0] if grey else over_black)
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if grey else "RGB")  # 1, P, CMYK, YCbCr, …


def decode_image(path: Path, resize: ResizePolicy | None = None) -> np.ndarray | str:
    """(H, W, C) uint8 with C in {1, 3}, upright per its EXIF orientation, or the reason it
    cannot be used. With `resize`, H = W = its resolution."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (extension {path.suffix or 'none'!s})"
    try:
        with warnings.catch_warnings():
            # Pillow warns of sizes near its limit; check_side below rejects them anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            # The size comes from the header: refuse before decoding, not after (a 300 KB PNG
            # can declare 10000×10000 px, a gigabyte decoded).
            side_problem = check_side(image.height, image.width)
            if side_problem:
                return side_problem
            if resize is not None and image.format == "JPEG":
                # Decode a photo much larger than the target at 1/2–1/8 scale in the DCT (still
                # ≥ JPEG_DRAFT_GAP × the target); Lanczos then does the antialiased last step.
                image.draft(None, resize.draft_size)
            image.load()
            oriented = any(key in image.info for key in ORIENTATION_INFO)
            if oriented or image.format not in ("JPEG", "PNG"):
                ImageOps.exif_transpose(image, in_place=True)  # upright, as the camera meant
            pixels = eight_bit(image)
            if isinstance(pixels, str):
                return pixels
            if resize is not None:
                pixels = resize.apply(pixels)
            array = np.asarray(pixels)
            return array[:, :, None] if array.ndim == 2 else array
    except UnidentifiedImageError:
        return "not a decodable image (unknown or corrupt format)"
    except Image.DecompressionBombError as exc:
        # Raised by Image.open from the header, for more than 2 × MAX_IMAGE_PIXELS pixels.
        return f"odd shape: {str(exc).rstrip('.')} (sides must be {MIN_SIDE}–{MAX_SIDE} px)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt image: {exc}"


def read_image_folder(folder: Path, progress: Progress | None = None, resize: ResizePolicy | None = None) -> Dataset:
    root = folder.resolve()  # the folder itself may be a link; what is inside must stay in it
    top = list_folder(folder, root)
    rejected = list(top.rejected)
    entries: list[tuple[Path, int]] = [(p, UNLABELLED) for p in top.files]
    class_names: list[str] = []
    for class_dir in top.dirs:
        under = files_under(class_dir, root)
        rejected += under.rejected
        if under.files:  # a folder with nothing usable in it is not a class
            entries += [(p, len(class_names)) for p in under.files]
            class_names.append(class_dir.name)
    if not entries and not rejected:
        raise DataError(f"{folder}: empty folder (no files)")
    images, labels = [], []
    decoded_all = decode_all([p for p, _ in entries], progress, resize)
    for (path, label), decoded in zip(entries, decoded_all, strict=True):
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
        class_names=class_names or None,
        rejected=rejected,
    )


def read_sequence_folder(folder: Path, progress: Progress | None = None, resize: ResizePolicy | None = None) -> Dataset:
    root = folder.resolve()
    top = list_folder(folder, root)
    if not top.dirs and not top.rejected:
        raise DataError(f"{folder}: no sequence subfolders (one folder of frames per sequence)")
    rejected = top.rejected + [
        Rejection(str(p), "not a sequence folder (a file beside the sequences)") for p in top.files
    ]
    decoded_sequences: list[tuple[Path, list[np.ndarray]]] = []
    for done, sequence_dir in enumerate(top.dirs, 1):
        if progress is not None and (done % 64 == 0 or done == len(top.dirs)):
            progress(done, len(top.dirs))
        if sequence_dir.resolve() == root:  # a link back to the source folder
            loop = f"symlink loop → {os.readlink(sequence_dir)}"
            rejected.append(Rejection(str(sequence_dir), loop))
            continue
        listing = list_folder(sequence_dir, root)
        frames, problem = [], None
        if listing.rejected:
            first = listing.rejected[0]
            problem = f"frame {Path(first.item).name}: {first.reason}"
        for frame_path in [] if problem else listing.files:
            decoded = decode_image(frame_path, resize)
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
