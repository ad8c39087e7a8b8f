"""The modality interface: what one kind of data (images, text, audio) owns.

The stages, the gate, the registry, serving, monitoring, the label queue and the audit are the
same for every kind of data; they ask the modality object for everything that differs:

| owns | method or attribute |
| --- | --- |
| how examples are found and read | `scan`, `folder_data`, `extensions`, `key_column` |
| what is checked | `row_expectations`, `decode_errors` |
| backbone and preprocessing | `load_backbone` (its `Backbone.grouper`: layer groups), `save_backbone`, `rebuild` |
| loader and augmentation | `dataset` |
| the exported graph's inputs | `input_names`, `export_module`, `static_int8` |
| serving's decoding, without torch | `codec` |
| drift summary features | `feature_names`, `codec(...).read` |
| behavioural checks and slices | `perturbations`, `derived_slices` |
| labelling | `labelstudio_config`, `media_folder` |

A fourth kind of data is one module with a subclass of `Modality` and one line in
`pipeline/modalities/registry.py`. Modules here import torch only inside methods that train
(serving installs no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

if TYPE_CHECKING:
    from pipeline.core.params import DataParams, PrepareParams, ValidateParams


class Codec:
    """Serving's side of a modality: raw inputs -> model feeds and summary features, numpy only."""

    def read(self, raw: Any, where: str) -> tuple[Any, dict[str, float]]:
        """One raw input (file bytes, or a text) -> (the model's input, its summary features).
        Raises InputRejected naming `where` for an input that is not one."""
        raise NotImplementedError

    def feeds(self, inputs: list[Any]) -> dict[str, Any]:
        """The onnxruntime feeds for a batch of `read` outputs."""
        raise NotImplementedError


class Modality:
    name: ClassVar[str]
    folder_data: ClassVar[bool] = True  # examples are files in class folders (else rows of a table)
    key_column: ClassVar[str] = "path"  # the manifest column a user finds a row by
    noun: ClassVar[str] = "examples"  # plural, in messages: "images", "texts", "clips"
    extensions: ClassVar[tuple[str, ...]] = ()  # file suffixes of folder data
    feature_names: ClassVar[tuple[str, ...]] = ()  # the production log's summary features
    derived_slices: ClassVar[tuple[str, ...]] = ()  # evaluate.slices names computed from the manifest
    media_folder: ClassVar[str] = ""  # where the label queue puts kept inputs for a labeller
    labelstudio_tag: ClassVar[str] = "Text"
    static_int8: ClassVar[bool] = False  # int8 with calibrated activation ranges (else dynamic)
    flip_tta: ClassVar[bool] = False  # a mirrored view keeps the label (test-time augmentation)
    lora: ClassVar[bool] = False  # select.lora_min_params applies: large backbones train LoRA adapters
    upload_hint: ClassVar[str] = ""  # how a client sends one to `graft serve`
    default_candidates: ClassVar[tuple[dict[str, str], ...]] = ()  # what `graft init` proposes
    weights_note: ClassVar[str] = ""  # where those candidates' weights come from

    # ------------------------------------------------------------ data
    def file_extensions(self, prepare: PrepareParams) -> tuple[str, ...]:
        return self.extensions

    def scan(self, path: Path, data: DataParams, prepare: PrepareParams
             ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        """(manifest rows with facts, class names, skipped files)."""
        raise NotImplementedError

    def row_expectations(self, v: ValidateParams, gxe: Any) -> list[tuple[Any, Callable[[Any], str]]]:
        """Great Expectations row expectations of this kind of data, each with the reason a row fails."""
        return []

    def decode_errors(self, frame: pd.DataFrame, root: str, v: ValidateParams, workers: int,
                      meanwhile: Callable[[], Any] | None = None) -> pd.Series | None:
        """Per row, why its content does not decode (None = fine); None when nothing is decoded."""
        return None

    def derived_slice(self, frame: pd.DataFrame, column: str) -> pd.Series:
        raise KeyError(column)

    # ------------------------------------------------------------ model (torch)
    def load_backbone(self, name: str, weights: Any, max_length: int, pretrained: bool,
                      manifest: pd.DataFrame | None = None) -> Any:
        raise NotImplementedError

    def save_backbone(self, backbone: Any, folder: Path) -> None:
        """Write what `rebuild` needs beside the weights (configs, tokenizer)."""

    def rebuild(self, folder: Path, info: dict[str, Any], num_classes: int) -> tuple[Any, Any]:
        """(Classifier without pretrained weights, tokenizer or None) from a saved model folder."""
        raise NotImplementedError

    def dataset(self, backbone: Any, frame: pd.DataFrame, targets: list[int], root: Path, *,
                train: bool, augment: bool) -> tuple[Any, Callable[[list[Any]], Any]]:
        """(torch Dataset, collate) giving ((input tensors...), targets) batches."""
        raise NotImplementedError

    def perturbations(self) -> dict[str, Callable[[Any], Any]]:
        """Raw-input changes that should not change a prediction (evaluate's behavioural checks)."""
        return {}

    def perturbed(self, backbone: Any, frame: pd.DataFrame, root: Path, op: Callable[[Any], Any]) -> Any:
        """A Dataset of the eval inputs of `frame` after `op`."""
        raise NotImplementedError

    def input_names(self) -> list[str]:
        raise NotImplementedError

    def export_module(self, clf: Any) -> tuple[Any, dict[str, Any]]:
        """(a module whose forward takes the named inputs and returns (logits, embedding),
        dynamic_shapes for torch.onnx.export)."""
        raise NotImplementedError

    def export_files(self, train_model: Path, model_out: Path) -> None:
        """Copy what serving's codec needs from the trained model folder into the exported one."""

    # ------------------------------------------------------------ serving (numpy)
    def codec(self, model_dir: Path, preprocess: dict[str, Any], **limits: Any) -> Codec:
        """Serving's decoder; `limits` are serve's (max_pixels, max_audio_seconds) that apply to it."""
        raise NotImplementedError

    def reference_inputs(self, chunk: pd.DataFrame, root: Path) -> list[Any]:
        """Raw inputs of manifest rows, as a client would send them (bytes of files, or texts)."""
        return [(root / rel).read_bytes() for rel in chunk["path"]]

    def write_side_files(self, manifest: pd.DataFrame, model_dir: Path) -> None:
        """Anything serving's codec reads beside the model that comes from the training data."""

    # ------------------------------------------------------------ labelling
    def labelstudio_config(self, labels: list[str]) -> str:
        field = self.labelstudio_field
        choices = "\n".join(f'    <Choice value="{escape(c, quote=True)}"/>' for c in labels)
        return (f'<View>\n  <{self.labelstudio_tag} name="{field}" value="${field}"/>\n'
                f'  <Choices name="label" toName="{field}" choice="single" showInLine="true">\n'
                f"{choices}\n  </Choices>\n</View>\n")

    @property
    def labelstudio_field(self) -> str:
        return self.labelstudio_tag.lower()

    def __repr__(self) -> str:
        return f"<modality {self.name}>"
