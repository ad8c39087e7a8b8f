"""The kinds of data graft knows, by name. A fourth is a module with a `Modality` subclass and one
line in MODALITIES."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import DataError
from pipeline.modalities.audio import AudioModality
from pipeline.modalities.base import Modality
from pipeline.modalities.image import ImageModality
from pipeline.modalities.text import TextModality

if TYPE_CHECKING:
    from pipeline.core.params import PrepareParams

MODALITIES: dict[str, Modality] = {m.name: m for m in (ImageModality(), TextModality(), AudioModality())}
FOLDER_KINDS = [m for m in MODALITIES.values() if m.folder_data]
TABLE_KIND = next(m for m in MODALITIES.values() if not m.folder_data)


def get_modality(name: str) -> Modality:
    try:
        return MODALITIES[name]
    except KeyError:
        raise DataError(f"unknown kind of data {name!r}; data.modality is one of auto, {', '.join(MODALITIES)}") from None


def folder_kind(root: Path, prepare: PrepareParams | None = None) -> Modality:
    """The folder modality whose files are the most numerous under `root` (images win a tie, and a
    folder with none of any); `prepare` may widen a modality's file extensions."""
    counts = dict.fromkeys((m.name for m in FOLDER_KINDS), 0)
    suffixes = {m.name: {e.lower() for e in (m.file_extensions(prepare) if prepare else m.extensions)}
                for m in FOLDER_KINDS}
    for seen, path in enumerate(root.rglob("*")):
        if seen >= 50_000:  # enough to tell; a huge tree is not walked to its end
            break
        for name, exts in suffixes.items():
            if path.suffix.lower() in exts:
                counts[name] += 1
    return MODALITIES[max(counts, key=lambda n: (counts[n], -list(counts).index(n)))]


def resolve(path: Path, modality: str, prepare: PrepareParams | None = None) -> Modality:
    """data.modality, or for auto: a file is a table of texts, a folder holds images or audio."""
    if modality != "auto":
        return get_modality(modality)
    return folder_kind(path, prepare) if path.is_dir() else TABLE_KIND
