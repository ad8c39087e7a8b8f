"""params.yaml's sections: frozen, typed, every key with a default (loading is in config.py).

A params file may hold only the keys it changes. Unknown keys, wrong types and out-of-range
values fail with the key's dotted path and what was expected.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, PositiveFloat, field_validator, model_validator

from pipeline.core.params_data import (  # noqa: F401  (re-exported: every section from one place)
    AudioChecks,
    DataParams,
    ImageChecks,
    MinPerClass,
    PrepareParams,
    Section,
    SplitFractions,
    TextChecks,
    ValidateParams,
    has_credentials,
    refuse_credentials,
)


class Candidate(Section):
    name: str
    weights: str | None = Field(None, description="file, folder or package:<module>; none = hub cache")
    pretrained: bool = Field(True, description="false: the same architecture, randomly initialised")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


Strategy = Literal["linear_probe", "partial", "full", "gradual_unfreeze", "lora"]


class SelectParams(Section):
    candidates: list[Candidate] = Field(default_factory=list)
    sample_per_class: int = Field(200, ge=2, description="training examples per class for the probe")
    cv_folds: int = Field(5, ge=2)
    max_latency_ms: float = Field(0.0, ge=0.0, description="CPU batch-1 budget; 0 = none")
    max_params: int = Field(0, ge=0, description="parameter budget; 0 = none")
    latency_runs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    strategy: Literal["auto", "linear_probe", "partial", "full", "gradual_unfreeze", "lora"] = "auto"
    small_data_per_class: int = Field(100, ge=1, description="below this many examples in the median class, "
                                                             "data counts as small")
    good_probe_f1: float = Field(0.9, ge=0.0, le=1.0, description="a probe this good needs little tuning")
    lora_min_params: int = Field(100_000_000, ge=0, description="transformers this large use LoRA")


class LoraParams(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TrainParams(Section):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="auto | cpu | cuda | cuda:N")
    seed: int = 0
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-5, gt=0.0, description="learning rate of the top backbone group")
    head_lr: float = Field(1e-3, gt=0.0)
    layer_decay: float = Field(0.75, gt=0.0, le=1.0, description="lr multiplier per group going down")
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, ge=0.0, description="max gradient norm; 0 = off")
    patience: int = Field(3, ge=1, description="epochs without a better val macro-F1 before stopping")
    class_weighting: bool | Literal["auto"] = Field("auto", description="inverse class frequency weights; auto: "
                                                    "the probe's choice, which fine-tuning follows")
    partial_groups: int = Field(2, ge=1, description="top layer groups trained by `partial`")
    unfreeze_every: int = Field(1, ge=1, description="gradual_unfreeze: epochs per newly unfrozen group")
    batchnorm: Literal["frozen", "train"] = Field("frozen", description="frozen: keep BatchNorm's pretrained statistics")
    augment: bool = True
    mixup: float = Field(0.0, ge=0.0, description="images: mixup alpha; 0 = off")
    cutmix: float = Field(0.0, ge=0.0, description="images: cutmix alpha; 0 = off")
    max_minutes: float = Field(30.0, ge=0.0, description="no epoch starts that would end past this; 0 = no budget")
    min_gain: float = Field(0.005, ge=0.0, description="a fine-tune ships only beating the probe's val macro-F1 by this")
    gain_confidence: float = Field(0.9, ge=0.0, lt=1.0, description="...and only when val vouches for it: the "
                                   "paired-bootstrap lower bound at this level, Bonferroni-corrected for the epochs, > 0")
    tta: Literal["auto", "off", "hflip"] = Field("auto", description="images: the mirror averaged in, inside "
                                                 "the model; auto = when val vouches for it (twice the cost)")
    probe_c: list[PositiveFloat] = Field([0.01, 0.1, 1.0, 10.0], min_length=1,
                                 description="the probe's inverse L2 strengths, chosen on val")
    max_length: int = Field(128, ge=8, description="text: tokens per example")
    workers: int = Field(0, ge=0, description="data-loading processes")
    lora: LoraParams = Field(default_factory=LoraParams)


class ExportParams(Section):
    opset: int = Field(18, ge=13)
    max_abs_diff: float = Field(1e-4, gt=0.0, description="largest |logit| difference onnxruntime may show, times the largest |logit| beyond 1")
    quantize: bool = Field(True, description="also write an int8 model; shipped only when it keeps the model")
    int8_max_accuracy_drop: float = Field(0.01, ge=0.0, description="test accuracy the int8 model may lose")
    int8_min_agreement: float = Field(0.99, ge=0.0, le=1.0, description="share of top-1 predictions it must share")
    int8_min_speedup: float = Field(1.1, ge=0.0, description="x the fp32 onnxruntime speed at batch 1 it must reach")
    calibration_size: int = Field(256, ge=8, description="training examples that calibrate static int8 ranges")
    latency_seconds: float = Field(10.0, gt=0.0, description="time budget per runtime for the latency measurement")
    latency_runs: int = Field(50, ge=3, description="at most this many timed runs per runtime and batch size")
    reference_size: int = Field(2000, ge=50, description="held-out (val and test) examples profiled as the drift reference")


class EvaluateParams(Section):
    slices: list[str] = Field(default_factory=list, description="manifest columns, or size_bucket (images) / length_bucket (text) / duration_bucket (audio)")
    ece_bins: int = Field(15, ge=2)


class Bound(Section):
    min: float | None = None
    max: float | None = None


class ChangeBound(Section):
    min_abs: float | None = Field(None, description="(challenger - champion), good direction; negative = tolerated regression")
    min_rel: float | None = Field(None, description="(challenger - champion) / |champion|, good direction")


class BootstrapParams(Section):
    samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0


DEFAULT_BOUNDS = {"macro_f1": {"min": 0.7}, "accuracy": {"min": 0.7}, "ece": {"max": 0.2}}
DEFAULT_CHANGE = {"macro_f1": {"min_abs": 0.0}}


def _merged(defaults: dict[str, dict[str, Any]], given: Any) -> Any:
    """A bounds table given in params over the defaults: each named metric changes alone (and each
    of its keys alone); `metric: null` removes a default, and stays in the table as removed."""
    if not isinstance(given, dict):
        return given
    out: dict[str, Any] = {k: dict(v) for k, v in defaults.items()}
    for metric, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(metric), dict):
            out[metric] = {**out[metric], **value}
        else:
            out[metric] = value
    return out


class GateParams(Section):
    primary: str = "macro_f1"
    bounds: dict[str, Bound | None] = Field(
        default_factory=lambda: {k: Bound(**v) for k, v in DEFAULT_BOUNDS.items()},
        description="merged over the defaults metric by metric; `metric: null` removes one")
    change: dict[str, ChangeBound | None] = Field(
        default_factory=lambda: {k: ChangeBound(**v) for k, v in DEFAULT_CHANGE.items()},
        description="merged over the defaults; `macro_f1: null` removes the comparison with the champion")
    require_significant: bool = False
    bootstrap: BootstrapParams = Field(default_factory=BootstrapParams)
    slice_bounds: dict[str, Bound] = Field(default_factory=dict)
    require_parity: bool = True
    first_run: Literal["bless_on_value_bounds", "require_manual"] = "bless_on_value_bounds"

    @model_validator(mode="before")
    @classmethod
    def _merge_over_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {**data}
            for key, defaults in (("bounds", DEFAULT_BOUNDS), ("change", DEFAULT_CHANGE)):
                if key in data:
                    data[key] = _merged(defaults, data[key])
        return data


class ServeParams(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    model: Literal["fp32", "int8"] = "fp32"
    max_batch: int = Field(64, ge=1, description="most inputs one request may carry")
    max_audio_seconds: float = Field(60.0, gt=0, description="longest audio clip a request or score may send, "
                                                             "checked from its header before decoding")
    max_pixels: int = Field(25_000_000, ge=1, description="largest image (width x height) a request or score "
                                                          "may send, checked from the header before decoding")
    max_upload_mb: float = Field(20.0, gt=0, description="largest file (or JSON body) one request may carry")
    max_request_mb: float = Field(100.0, gt=0, description="largest request body, counted while it streams in: "
                                                           "refused before it is parsed or spooled to disk")
    workers: int = Field(1, ge=1, le=64, description="server processes (uvicorn workers), each with its own "
                                                     "model, hot reload and production-log writer")
    reload_seconds: float = Field(5.0, ge=0, description="how often the champion pointer is checked; 0 = never")
    flush_records: int = Field(50, ge=1, description="the log is written at least every this many records")
    flush_seconds: float = Field(5.0, gt=0, description="... and at least this often")
    token_file: str = Field("", description="a file holding the bearer token clients must send (a mounted "
                                            "Secret); the GRAFT_API_TOKEN environment variable wins; '' = none")
    keep_inputs_days: float = Field(30.0, ge=0, description="log parts and kept inputs older than this are "
                                                          "deleted by the monitoring run; 0 = keep forever")
    keep_inputs_mb: float = Field(10240.0, ge=0, description="kept inputs beyond this size go, oldest first; 0 = no cap")
    keep_inputs: bool = Field(True, description="log texts, keep images and audio (log/inputs/): for the label queue")

    def input_limits(self) -> dict[str, float]:
        """The limits a modality's codec applies to one input."""
        return {"max_pixels": self.max_pixels, "max_audio_seconds": self.max_audio_seconds}


class MonitorParams(Section):
    window_hours: float = Field(24.0, gt=0, description="current window: log records of the last N hours")
    window_records: int = Field(5000, ge=0, description="... at most the latest N of them; 0 = all")
    min_records: int = Field(200, ge=1, description="fewer current records than this: no decision")
    false_alarm_rate: float = Field(
        0.02, gt=0, lt=0.5, description="the largest share of healthy windows the rule may call drift: half "
        "for the per-column tests (Bonferroni over the columns), half for the embedding test")
    embedding_method: Literal["model", "ratio", "distance", "mmd"] = "model"
    embedding_threshold: float | None = Field(
        None, gt=0, description="none = from false_alarm_rate and the window sizes (model); a number fixes it, "
        "and the rule's false-alarm rate is then not known")
    embedding_sample: int = Field(2000, ge=100, description="rows per side sampled for embedding drift")
    cooldown_hours: float = Field(24.0, ge=0, description="one drift episode triggers one retraining")
    estimator: Literal["atc", "cbpe"] = Field("atc", description="the label-free accuracy estimate")
    trigger: Literal["drift", "estimated_drop", "drift_and_drop", "drift_or_drop"] = Field(
        "drift", description="retrain on input drift, on an estimated drop below the test accuracy, both, or either")
    max_estimated_drop: float = Field(0.05, gt=0, lt=1, description="the estimated drop (accuracy, 0-1) that counts")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, value: Any) -> Any:
        replaced = sorted({"drift_share", "method", "threshold"} & set(value or {})) if isinstance(value, dict) else []
        if replaced:
            raise ValueError(
                f"{', '.join('monitor.' + k for k in replaced)}: replaced by monitor.false_alarm_rate (the share of "
                "healthy windows the drift rule may flag; each column is a p-value test at false_alarm_rate / 2 "
                "divided by the number of columns). Remove the key; set false_alarm_rate to change the rule")
        return value


class ScheduleParams(Section):
    training_cron: str = Field("0 3 * * 1", description="training_flow: Mondays 03:00")
    monitoring_minutes: float = Field(60.0, gt=0, description="monitoring_flow interval")
    ingest_minutes: float = Field(5.0, gt=0, description="ingest_flow interval (the inbox)")
    # `graft deploy`: the Prefect work pool each deployment runs on (`graft worker --pool NAME`)
    training_pool: str = Field("graft-gpu", min_length=1, description="training_flow's work pool")
    monitoring_pool: str = Field("graft-cpu", min_length=1, description="monitoring_flow's work pool")
    ingest_pool: str = Field("graft-cpu", min_length=1, description="ingest_flow's work pool")
    crashed_after_seconds: float = Field(120.0, ge=60, description="`graft deploy`: a flow run with no heartbeat "
                                         "for this long (its worker or machine died) is marked crashed; runs beat "
                                         "every third of it, at least every 30 s (Prefect's floor)")


class PathsParams(Section):
    prepare: str = "outputs/prepare"
    validate_: str = Field("outputs/validate", alias="validate")
    select: str = "outputs/select"
    train: str = "outputs/train"
    export: str = "outputs/export"
    evaluate: str = "outputs/evaluate"
    gate: str = Field("outputs/gate", description="the gate's decision and the run summary")
    registry: str = Field("registry", description="model versions and the champion pointer")
    cache: str = Field("cache", description="embedding cache, reused across runs")
    log: str = Field("production/log", description="the production prediction log (Parquet, by hour)")
    monitor: str = "outputs/monitor"
    inbox: str = Field("data/inbox", description="new labelled batches waiting to be ingested")

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    _no_credentials = field_validator("*")(refuse_credentials)


class Params(Section):
    data: DataParams = Field(default_factory=DataParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    select: SelectParams = Field(default_factory=SelectParams)
    train: TrainParams = Field(default_factory=TrainParams)
    export: ExportParams = Field(default_factory=ExportParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    gate: GateParams = Field(default_factory=GateParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    paths: PathsParams = Field(default_factory=PathsParams)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)
