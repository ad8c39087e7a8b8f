"""Folder data: class sub-folders (optionally under train/ val/ test/) scanned into rows, for any
kind of file; and for images, each file's facts read from its header (hash, size, mode, format)
without decoding it, and the decode check validate runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from pipeline.core.artifacts import SPLIT_FOLDERS
from pipeline.core.errors import DataError
from pipeline.core.params import PrepareParams


def _split_layout(root: Path, mode: str) -> bool:
    dirs = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    is_split = bool(dirs) and all(d.lower() in SPLIT_FOLDERS for d in dirs)
    if mode == "yes" and not is_split:
        raise DataError(
            f"{root}: prepare.split_folders is 'yes' but the top-level folders are {sorted(dirs)}; "
            "expected train/, val/ and test/ (or set prepare.split_folders: auto)"
        )
    return is_split if mode != "no" else False


def scan_class_folders(root: Path, prepare: PrepareParams, extensions: tuple[str, ...] | list[str]
                       ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Find the files of `extensions` in class folders (images, audio clips): (rows without facts,
    class names including empty folders, skipped files)."""
    exts = {e.lower() for e in extensions}
    split_layout = _split_layout(root, prepare.split_folders)
    class_roots: list[tuple[Path, str | None]] = []
    if split_layout:
        for sdir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            class_roots += [(c, SPLIT_FOLDERS[sdir.name.lower()]) for c in sorted(sdir.iterdir())]
    else:
        class_roots = [(c, None) for c in sorted(root.iterdir())]
    rows: list[dict[str, Any]] = []
    classes: set[str] = set()
    skipped: list[str] = []
    for entry, split in class_roots:
        rel = entry.relative_to(root).as_posix()
        if entry.name.startswith("."):
            continue
        if entry.is_file() or (entry.is_symlink() and not entry.is_dir()):
            if entry.suffix.lower() in exts:
                where = f"{root}/<class>/" if split is None else f"{entry.parent}/<class>/"
                rows.append({"path": rel, "label": "", "split": split,
                             "error": f"not inside a class folder; move it into {where}"})
            continue
        if entry.is_symlink():
            rows.append({"path": rel, "label": entry.name, "split": split, "error": None})
            continue
        classes.add(entry.name)
        for dirpath, dirnames, filenames in os.walk(entry):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel_file = (Path(dirpath) / name).relative_to(root).as_posix()
                if Path(name).suffix.lower() not in exts:
                    skipped.append(rel_file)
                    continue
                rows.append({"path": rel_file, "label": entry.name, "split": split, "error": None})
            # symlinked directories are not walked by os.walk; check them like files
            for d in list(dirnames):
                if (Path(dirpath) / d).is_symlink():
                    rel_dir = (Path(dirpath) / d).relative_to(root).as_posix()
                    rows.append({"path": rel_dir, "label": entry.name, "split": split, "error": None})
    return rows, sorted(classes), skipped


def resolved(path: Path) -> tuple[Path, str]:
    """The file a path names, or why it names none: a symbolic-link loop or a dangling link is a
    row's error (named, set aside), never a crash of the scan."""
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13: a loop
        return path, "symbolic-link loop: the link points back at itself; replace it with the file"
    except OSError as exc:
        what = "symbolic-link loop" if exc.errno == 40 else "a link to nothing (its target is gone)"
        return path, f"{what}; replace it with the file or remove it"
    return target, ""


def read_data_file(root: str, rel: str) -> tuple[bytes | None, str | None]:
    """A data file's bytes, or None and why not: a symbolic-link loop or dangling link, a link out
    of the data root or to a folder, a file that cannot be read."""
    path = Path(root) / rel
    target, why = resolved(path)
    if why:
        return None, why
    if path.is_symlink() and not target.is_relative_to(Path(root).resolve()):
        return None, (f"symlink points outside the data root (to …/{target.parent.name}/{target.name}); copy the "
                      f"file into {root} instead of linking to it")
    if target.is_dir():
        return None, "symlinked folder inside a class folder; copy its files in instead"
    try:
        return target.read_bytes(), None
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror}; check its permissions"


def image_facts(args: tuple[str, str]) -> dict[str, Any]:
    """Hash one file and read its image header (no full decode). Runs in worker processes."""
    root, rel = args
    facts: dict[str, Any] = {"sha256": None, "bytes": None, "width": None, "height": None,
                             "mode": None, "format": None, "error": None}
    data, facts["error"] = read_data_file(root, rel)
    if data is None:
        return facts
    facts["sha256"] = hashlib.sha256(data).hexdigest()
    facts["bytes"] = len(data)
    try:
        # PIL's decompression-bomb limit stays on; its warning band is treated as an error too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                # the size as seen: EXIF orientations 5-8 turn the stored image by 90 degrees
                turned = im.getexif().get(0x0112) in (5, 6, 7, 8)
                w, h = (im.height, im.width) if turned else (im.width, im.height)
                facts.update(width=w, height=h, mode=im.mode, format=im.format)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        facts["error"] = (f"decompression bomb refused: {exc} Downscale the image "
                          "below PIL's Image.MAX_IMAGE_PIXELS before adding it")
    except UnidentifiedImageError:
        facts["error"] = "not an image (PIL cannot identify it); remove the file or replace it with a real image"
    except Exception as exc:  # a malformed header surfaces as many exception types
        facts["error"] = f"unreadable image header ({type(exc).__name__}: {exc}); re-save or remove the file"
    return facts




def decode_check(args: tuple[str, str, int]) -> str | None:
    """None if the image verifies and a thumbnail really decodes, else the reason."""
    root, rel, side = args
    path = Path(root) / rel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                # a full load: JPEG's reduced-scale draft decoding does not notice truncation
                im.load()
                im.thumbnail((side, side))
    except Exception as exc:
        return (f"image does not decode ({type(exc).__name__}: {exc}); "
                "re-export the file from its source or remove it")
    return None
