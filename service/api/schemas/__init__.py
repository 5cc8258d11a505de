"""The wire format: API request/response models (*Create / *Read), shared with the client (service.client).

Pydantic and service.domain only. One module per area; every name is re-exported here, so
`from service.api.schemas import JobRead` is the way to import them:

    base.py      UTC timestamps, the spec's JSON type, the error body, pages
    health.py    health, readiness, workers, usage
    payloads.py  engine-made payloads: column summaries, metrics, history, per-head /predict outputs
    datasets.py  datasets, audits, dataset imports
    jobs.py      training jobs, batch predictions, evaluations
    comparisons.py  the report of a comparison job
    models.py    registered models, versions, aliases, /predict
    keys.py      API keys

The engine's spec is validated by service.ml.spec, not here.
"""

from service.api.schemas.base import (
    NAME_PATTERN,
    SPEC_MARK,
    AuditSpecJson,
    ErrorRead,
    Page,
    SpecJson,
    Timestamp,
)
from service.api.schemas.comparisons import (
    ComparisonBest,
    ComparisonCompute,
    ComparisonHead,
    ComparisonOverall,
    ComparisonRead,
    ComparisonResult,
    ComparisonVariant,
    ComparisonVerdict,
)
from service.api.schemas.datasets import (
    AuditCreate,
    AuditFinding,
    AuditRead,
    DatasetCreated,
    DatasetList,
    DatasetRead,
    ImportCreate,
    ImportRead,
)
from service.api.schemas.health import (
    HealthRead,
    QuotaUse,
    ReadyRead,
    StorageUse,
    UsageRead,
    WorkerList,
    WorkerRead,
    WorkersAlive,
)
from service.api.schemas.jobs import (
    BatchPredictionCreate,
    BatchPredictionList,
    BatchPredictionRead,
    EvaluationCreate,
    EvaluationList,
    EvaluationRead,
    JobCreate,
    JobList,
    JobRead,
    Progress,
)
from service.api.schemas.keys import KeyCreate, KeyCreated, KeyList, KeyRead
from service.api.schemas.models import (
    ALIAS_PATTERN,
    AliasEventRead,
    AliasHistory,
    AliasRead,
    AliasSet,
    ModelList,
    ModelRead,
    ModelRef,
    ModelSummary,
    PredictCreate,
    PredictRead,
    Tag,
    VersionRead,
    VersionUpdate,
)
from service.api.schemas.payloads import (
    BinaryOutput,
    ColumnSummary,
    GatedOutput,
    HeadBaseline,
    HeadOutput,
    HeadTrainStats,
    HistoryEntry,
    Metrics,
    MulticlassOutput,
    MultilabelOutput,
    RegressionOutput,
)

__all__ = [
    "ALIAS_PATTERN",
    "AliasEventRead",
    "AliasHistory",
    "AliasRead",
    "AliasSet",
    "AuditCreate",
    "AuditFinding",
    "AuditRead",
    "AuditSpecJson",
    "ComparisonBest",
    "ComparisonCompute",
    "ComparisonHead",
    "ComparisonOverall",
    "ComparisonRead",
    "ComparisonResult",
    "ComparisonVariant",
    "ComparisonVerdict",
    "BatchPredictionCreate",
    "BatchPredictionList",
    "BatchPredictionRead",
    "BinaryOutput",
    "ColumnSummary",
    "DatasetCreated",
    "DatasetList",
    "DatasetRead",
    "ErrorRead",
    "EvaluationCreate",
    "EvaluationList",
    "EvaluationRead",
    "GatedOutput",
    "HeadBaseline",
    "HeadOutput",
    "HeadTrainStats",
    "HealthRead",
    "HistoryEntry",
    "ImportCreate",
    "ImportRead",
    "JobCreate",
    "JobList",
    "JobRead",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyRead",
    "Metrics",
    "ModelList",
    "ModelRead",
    "ModelRef",
    "ModelSummary",
    "MulticlassOutput",
    "MultilabelOutput",
    "NAME_PATTERN",
    "Page",
    "PredictCreate",
    "PredictRead",
    "Progress",
    "QuotaUse",
    "ReadyRead",
    "RegressionOutput",
    "SPEC_MARK",
    "SpecJson",
    "StorageUse",
    "Tag",
    "Timestamp",
    "UsageRead",
    "VersionRead",
    "VersionUpdate",
    "WorkerList",
    "WorkerRead",
    "WorkersAlive",
]
