"""API request/response models (*Create / *Read). The engine's spec is validated by service.ml.spec, not here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_serializer

from service.domain import SCOPES, ImportStatus, JobStatus


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: every stored time is UTC, so say so."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]
# The task spec: validated by the engine (service.ml.spec.parse_spec, whose messages name the field), documented
# as the engine's own model (service/api/openapi.py replaces the marked schema by a $ref to components/Spec).
SPEC_MARK = "x-headwise-spec"
# The audit takes any object and reports its spec errors (200 with spec_errors): documented as Spec or any object.
AuditSpecJson = Annotated[dict[str, Any], WithJsonSchema({"type": "object", SPEC_MARK: "audit"})]
SpecJson = Annotated[dict[str, Any], WithJsonSchema({"type": "object", SPEC_MARK: True})]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorRead(BaseModel):
    error: str = Field(examples=["NotFound"])
    detail: str = Field(examples=["dataset 'abc' not found"])


class HealthRead(BaseModel):
    status: str = "ok"


class WorkersAlive(BaseModel):
    alive: int | None = None  # None when the database could not say
    detail: str


class ReadyRead(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    workers: WorkersAlive | None = None  # reported, never a readiness condition (README "Scaling out")
    error: str | None = None  # set with 503, like every error body
    detail: str | None = None


class Page(BaseModel):
    total: int
    limit: int
    offset: int


# ---- typed payloads (engine-made dicts documented field by field; extra keys allowed for new fields) ----
def _absent(value: Any) -> bool:
    """Optional engine fields are left out of answers when missing (not written as null)."""
    return value is None


class ColumnSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: Literal["binary", "categorical", "numeric"] = Field(description="what the labels look like")
    labelled: int = Field(description="rows with a label in this column")
    values: list[str] | list[bool] | None = Field(default=None, exclude_if=_absent,
                                                  description="distinct values (binary, categorical only)")


class HeadTrainStats(BaseModel):
    model_config = ConfigDict(extra="allow")
    loss: float | None = Field(default=None, description="mean training loss over labelled samples")
    labelled: int | None = Field(default=None, exclude_if=_absent)


class Metrics(BaseModel):
    """The best epoch's validation metrics: `val_loss` and per head (multiclass accuracy/macro_f1, binary
    accuracy/roc_auc, regression rmse/mae, gated heads also end-to-end figures)."""

    model_config = ConfigDict(extra="allow")
    val_loss: float | None = Field(default=None, exclude_if=_absent)
    tasks: dict[str, dict[str, Any]] | None = Field(default=None, exclude_if=_absent,
                                                    description="{head: {metric: value}}")


class HistoryEntry(BaseModel):
    """One epoch of training."""

    model_config = ConfigDict(extra="allow")
    epoch: int
    lr: float | None = Field(default=None, exclude_if=_absent)
    seconds: float | None = Field(default=None, exclude_if=_absent)
    images_per_second: float | None = Field(default=None, exclude_if=_absent)
    weights: dict[str, float] | None = Field(default=None, exclude_if=_absent,
                                             description="task weights used this epoch")
    train: dict[str, HeadTrainStats] | None = Field(default=None, exclude_if=_absent)
    val: dict[str, dict[str, Any]] | None = Field(default=None, exclude_if=_absent,
                                                  description="{head: {metric: value}}")
    val_loss: float | None = Field(default=None, exclude_if=_absent)


class _Output(BaseModel):
    model_config = ConfigDict(extra="allow")
    gated: Literal[False] | None = Field(default=None, exclude_if=_absent,
                                         description="present (false) on a gated head whose gate was predicted "
                                         "positive")


class MulticlassOutput(_Output):
    label: str
    probabilities: dict[str, float] = Field(description="{class: probability}, summing to 1")


class BinaryOutput(_Output):
    label: bool
    probability: float = Field(ge=0, le=1)


class MultilabelOutput(_Output):
    labels: list[str] = Field(description="the classes at or above the task's threshold")
    probabilities: dict[str, float] = Field(description="{class: probability}, independent per class")


class RegressionOutput(_Output):
    value: float | None = Field(description="null only if the model produced a non-finite number")


class GatedOutput(BaseModel):
    """A gated head whose predicted gate is negative: no value."""

    model_config = ConfigDict(extra="allow")
    value: None
    label: None = Field(default=None, exclude_if=_absent, description="classification heads (multiclass, binary)")
    labels: None = Field(default=None, exclude_if=_absent, description="multilabel heads")
    gated: Literal[True]
    reason: str = Field(examples=["category predicted 'none'"])


HeadOutput = MulticlassOutput | BinaryOutput | MultilabelOutput | RegressionOutput | GatedOutput


# ---- datasets ----------------------------------------------------------------------------------------
class DatasetRead(_Read):
    id: str
    name: str
    format: str
    filename: str
    num_samples: int
    columns: dict[str, ColumnSummary]
    size_bytes: int
    sha256: str
    created_at: Timestamp


class DatasetCreated(DatasetRead):
    warnings: list[str] = []


class DatasetList(Page):
    items: list[DatasetRead]


class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: AuditSpecJson


class AuditRead(BaseModel):
    audit: dict[str, Any] | None = Field(description="the engine's audit; null when the spec has errors")
    spec_errors: list[str]
    memory: dict[str, Any] | None = Field(
        default=None, description="estimated peak training memory (peak_bytes, parts, budget_bytes, fits, "
        "largest_batch_size); null when the spec has errors")


# ---- jobs --------------------------------------------------------------------------------------------
class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    model_name: str = Field(pattern=NAME_PATTERN, description="registered model name (letters, digits, . _ -)")
    spec: SpecJson


class ModelRef(BaseModel):
    name: str
    version: int


class Progress(BaseModel):
    epoch: int = Field(default=0, description="epochs completed")
    epochs: int | None = None
    fraction: float = 0.0
    batch: int | None = Field(default=None, description="batches done in the running epoch")
    batches: int | None = Field(default=None, description="batches per epoch")
    images_per_second: float | None = Field(default=None, description="training pace in the running epoch")
    eta_seconds: float | None = Field(default=None, description="the rest of the run at that pace")

    @model_serializer(mode="wrap")
    def _omit_unreported(self, handler):  # the batch fields appear only once the worker reported them
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in ("epoch", "epochs", "fraction")}


class JobRead(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str | None
    model_name: str
    spec: SpecJson
    progress: Progress
    history: list[HistoryEntry]
    metrics: Metrics
    error: str | None = None
    cancel_requested: bool
    attempts: int
    # queued/running jobs only: set while no live worker can take it on (e.g. "waiting for a worker: none alive")
    status_detail: str | None = None
    model: ModelRef | None = None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class JobList(Page):
    items: list[JobRead]


# ---- models ------------------------------------------------------------------------------------------
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
Tag = Annotated[str, Field(min_length=1, max_length=100)]


class VersionRead(BaseModel):
    name: str
    version: int
    metrics: Metrics
    spec: SpecJson
    dataset_id: str | None
    job_id: str
    checksums: dict[str, str]
    created_at: Timestamp
    description: str | None = None
    tags: list[str] = []
    aliases: list[str] = Field(default=[], description="aliases pointing at this version")
    parent: ModelRef | None = Field(default=None, description="warm start: the version it was initialised from")


class VersionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[Tag] | None = Field(default=None, max_length=50, description="replaces the version's tags")


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1, description="the version the alias points at from now on")


class AliasRead(BaseModel):
    alias: str
    version: int
    updated_at: Timestamp


class AliasEventRead(BaseModel):
    seq: int = Field(description="1, 2, ... per model: the order of the moves")
    alias: str
    action: Literal["set", "rollback", "delete"]
    from_version: int | None = Field(description="null: the alias was created")
    to_version: int | None = Field(description="null: the alias was deleted")
    key_id: str | None = Field(description="the API key that moved it (null: a server-side command)")
    key_name: str | None
    created_at: Timestamp


class AliasHistory(BaseModel):
    items: list[AliasEventRead]


class ModelSummary(BaseModel):
    name: str
    created_at: Timestamp
    latest_version: int | None
    latest: VersionRead | None


class ModelList(BaseModel):
    items: list[ModelSummary]


class ModelRead(BaseModel):
    name: str
    created_at: Timestamp
    latest_version: int | None
    aliases: list[AliasRead] = []
    versions: list[VersionRead]


class PredictCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(description="base64-encoded image files (PNG, JPEG, ...)")


class PredictRead(BaseModel):
    model: ModelRef = Field(description="the version that served the request")
    alias: str | None = Field(default=None, description="the alias it was resolved from, if one was asked for")
    predictions: list[dict[str, HeadOutput]] = Field(
        description="one {task: output} object per input image, in order; the output's shape follows the head type")


# ---- keys --------------------------------------------------------------------------------------------
class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Annotated[str, Field(json_schema_extra={"enum": list(SCOPES)})]] = Field(  # checked by auth
        min_length=1, examples=[["datasets:write", "jobs:write", "models:read", "predict"]])
    team: str | None = Field(default=None, pattern=NAME_PATTERN, description="defaults to the caller's team")


class KeyRead(_Read):
    id: str
    name: str
    team: str
    prefix: str
    scopes: list[str]
    created_at: Timestamp
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class KeyCreated(KeyRead):
    key: str = Field(description="the API key; shown only in this response")


class KeyList(BaseModel):
    items: list[KeyRead]


# ---- workers -----------------------------------------------------------------------------------------
class WorkerRead(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    device: str
    current_job: str | None = None  # shown for the caller's team (root: every team)
    alive: bool
    started_at: Timestamp
    last_seen_at: Timestamp
    stopped_at: Timestamp | None = None


class WorkerList(BaseModel):
    items: list[WorkerRead]
    alive: int
    lease_seconds: int


# ---- dataset imports from object storage ----------------------------------------------------------------
class ImportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(max_length=1000, examples=["s3://team-bucket/datasets/shapes/"])
    name: str | None = Field(default=None, max_length=200)
    spec: dict[str, Any] | None = None  # optional: labels are checked against it, as for an upload


class ImportRead(_Read):
    id: str
    status: ImportStatus
    source: str
    name: str | None
    progress: dict[str, Any]
    error: str | None
    dataset_id: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


# ---- usage (README "Limits and quotas") -------------------------------------------------------------------
class QuotaUse(BaseModel):
    used: int | None = Field(default=None, description="current use (absent for per-job limits)")
    limit: int | None = Field(description="null: no limit")
    setting: str = Field(description="the HEADWISE_* setting holding the limit")


class StorageUse(QuotaUse):
    datasets: int = Field(description="bytes of uploaded dataset archives")
    artifacts: int = Field(description="bytes of model version files")


class UsageRead(BaseModel):
    team: str
    active_jobs: QuotaUse
    storage_bytes: StorageUse
    job_sample_epochs: QuotaUse
    worker_memory_bytes: QuotaUse


# ---- jobs that run a model version: batch predictions and evaluations (service/api/batch_predictions.py,
# service/api/evaluations.py)
class BatchPredictionCreate(BaseModel):
    dataset_id: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="default: the latest version")
    alias: str | None = Field(default=None, pattern=ALIAS_PATTERN, description="the version an alias points at "
                              "(exclusive with version)")


class BatchPredictionRead(BaseModel):
    id: str
    model: ModelRef
    dataset_id: str | None
    status: JobStatus
    fraction: float = Field(description="share of the images done")
    images: int | None = Field(description="images predicted (once succeeded)")
    error: str | None
    cancel_requested: bool
    results: dict[str, str] | None = Field(description="result file URLs, once succeeded")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class BatchPredictionList(BaseModel):
    items: list[BatchPredictionRead]


class EvaluationCreate(BaseModel):
    dataset_id: str = Field(min_length=1, max_length=64)


class EvaluationRead(BaseModel):
    id: str
    model: ModelRef
    dataset_id: str | None
    status: JobStatus
    fraction: float
    images: int | None = Field(description="images evaluated (once succeeded)")
    heads: dict[str, dict[str, Any]] | None = Field(
        description="per head: labelled, the metrics of its type; gated heads: plain metrics given the true gate, "
                    "e2e_* end to end (the predicted gate must also let the sample through), gate rates")
    plots: dict[str, str] | None = Field(description="per head: confusion matrix / predicted-vs-true PNG URL")
    error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


class EvaluationList(BaseModel):
    items: list[EvaluationRead]
