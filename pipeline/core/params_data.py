"""params.yaml's data sections (data, prepare, validate) and the strict base of every section."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CREDENTIALS_REFUSED = ("a storage URL with credentials in it is refused (they would show in logs, cards and "
                       "answers): remove them from the URL and give them to the storage library instead "
                       "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, or its config file)")


def has_credentials(value: Any) -> bool:
    """A URL with a user name or password in it (s3://KEY:SECRET@bucket/...)."""
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return "@" in value.split("://", 1)[1].split("/", 1)[0]
    return bool(parts.username or parts.password)


def refuse_credentials(value: Any) -> Any:
    if has_credentials(value):
        raise ValueError(CREDENTIALS_REFUSED)
    return value


class Section(BaseModel):
    # strict: a YAML string "0.7" is not silently a float; extra keys are typos, not options.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(Section):
    path: str = "data/raw/images"

    _no_credentials = field_validator("path")(refuse_credentials)
    modality: Literal["auto", "image", "text", "audio"] = "auto"
    format: Literal["auto", "csv", "tsv", "parquet", "jsonl"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    split_column: str = Field("split", description="a column of train/val/test per row, used when the table has "
                                                   "it (like split folders); '' = always split by hash")
    header: bool = True
    columns: list[str] = Field(default_factory=list)
    encoding: str = "utf-8"

    @model_validator(mode="after")
    def _columns_without_header(self) -> DataParams:
        if not self.header and not self.columns:
            raise ValueError(
                "header: false needs columns: the names of the file's columns in order, "
                "e.g. columns: [label, text]"
            )
        return self


class SplitFractions(Section):
    train: float = Field(0.7, ge=0.0, le=1.0)
    val: float = Field(0.15, ge=0.0, le=1.0)
    test: float = Field(0.15, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        if self.train == 0:
            raise ValueError("train must be above 0")
        return self


class PrepareParams(Section):
    seed: int = 0
    split: SplitFractions = Field(default_factory=SplitFractions)
    split_folders: Literal["auto", "yes", "no"] = "auto"
    image_extensions: list[str] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"]
    )
    workers: int = Field(0, ge=0, description="processes for hashing and header reads; 0 = all cores")


class MinPerClass(Section):
    train: int = Field(5, ge=0)
    val: int = Field(1, ge=0)
    test: int = Field(1, ge=0)


class ImageChecks(Section):
    min_width: int = Field(16, ge=1)
    min_height: int = Field(16, ge=1)
    max_width: int = Field(8192, ge=1)
    max_height: int = Field(8192, ge=1)
    modes: list[str] = Field(default_factory=lambda: ["RGB", "RGBA", "L", "P", "LA"])
    thumbnail: int = Field(64, ge=8, description="side of the thumbnail decoded to prove decodability")


class TextChecks(Section):
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(20000, ge=1)


class AudioChecks(Section):
    min_seconds: float = Field(0.05, ge=0.0, description="shorter clips are quarantined")
    max_seconds: float = Field(600.0, gt=0.0, description="longer clips are quarantined (read from the header)")
    min_sample_rate: int = Field(8000, ge=1)
    max_channels: int = Field(8, ge=1)
    max_clipping_share: float = Field(0.05, ge=0.0, le=1.0, description="share of samples at full scale")
    max_silence_share: float = Field(0.95, ge=0.0, le=1.0, description="share of 20 ms frames below -50 dBFS")


class ValidateParams(Section):
    labels: list[str] = Field(default_factory=list)
    min_per_class: MinPerClass = Field(default_factory=MinPerClass)
    on_bad_rows: Literal["quarantine", "fail"] = "quarantine"
    max_bad_fraction: float = Field(0.2, ge=0.0, le=1.0)
    label_issues: Literal["warn", "quarantine", "off"] = Field("warn", description="select's label audit: warn = "
                                                               "list; quarantine = also train without them")
    image: ImageChecks = Field(default_factory=ImageChecks)
    text: TextChecks = Field(default_factory=TextChecks)
    audio: AudioChecks = Field(default_factory=AudioChecks)
