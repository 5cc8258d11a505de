"""Settings from the environment (prefix HEADWISE_), read once and cached. Every server setting is a field here;
no other server module reads os.environ (the client reads its own HEADWISE_URL / HEADWISE_API_KEY: it runs
elsewhere and must not load the server's settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADWISE_", extra="ignore")

    DATA_DIR: Path = Path("./headwise-data")
    # Defaults below are filled from DATA_DIR when left empty (embedded mode: SQLite + SQLite broker).
    DATABASE_URL: str = ""
    BROKER_URL: str = ""
    ADMIN_KEY: str | None = None
    # Server secret for HMAC-hashing API keys; generated into DATA_DIR/secret.key when unset.
    SECRET: str | None = None
    HOST: str = "127.0.0.1"
    PORT: int = 8000

    # Limits
    MAX_UPLOAD_BYTES: int = 2 * 1024**3
    MAX_PREDICT_IMAGES: int = 64
    MAX_PREDICT_BYTES: int = 64 * 1024**2
    MAX_JOB_SECONDS: int = 24 * 3600
    MODEL_CACHE_SIZE: int = Field(default=4, ge=1)
    PREDICT_DEVICE: str = "cpu"
    # Pretrained backbone weights (operator-managed; `headwise weights import`); default DATA_DIR/weights.
    WEIGHTS_DIR: Path | None = None
    TRAIN_DEVICE: str = "auto"

    # Object storage (issue 14): s3://bucket/prefix (endpoint, region, credentials from the standard AWS_*
    # variables) or file:///dir; empty = DATA_DIR is the only copy (embedded default). CACHE_BYTES bounds the
    # local read-through cache of stored datasets and artifacts (LRU).
    STORAGE_URL: str = ""
    CACHE_BYTES: int = Field(default=20 * 1024**3, ge=0)
    # `POST /v1/datasets {"source": "s3://bucket/prefix/"}` reads with the SERVICE's credentials, so only sources
    # under one of these comma-separated s3:// prefixes are accepted (empty: imports disabled).
    IMPORT_ALLOWED_PREFIXES: str = ""
    # Resource guards (README "Limits and quotas"). A quota of 0 is "no limit".
    # Peak training memory one worker may use: the estimate is checked against it at job creation and in the
    # audit, and the training child runs under it as a hard limit (RLIMIT_DATA on CPU, the CUDA allocator's
    # fraction on a GPU). 0 = auto: 60% of this host's RAM (or of its cgroup limit when lower); set it on GPU
    # workers to their GPU memory budget, and to the same value on the API as on the workers.
    WORKER_MEMORY_BYTES: int = Field(default=0, ge=0)
    TEAM_MAX_ACTIVE_JOBS: int = Field(default=20, ge=0)  # queued + running jobs per team -> 429
    TEAM_MAX_STORAGE_BYTES: int = Field(default=100 * 1024**3, ge=0)  # datasets + artifacts per team -> 413/507
    JOB_MAX_SAMPLE_EPOCHS: int = Field(default=10**8, ge=0)  # training.epochs x samples per job -> 422

    # Jobs and workers (owner: worker). A running job's lease is its heartbeat; the reaper requeues a job whose
    # heartbeat is older than JOB_LEASE_SECONDS and fails it once it has been attempted MAX_ATTEMPTS times.
    JOB_LEASE_SECONDS: int = Field(default=60, ge=5)
    MAX_ATTEMPTS: int = Field(default=3, ge=1)
    HEARTBEAT_SECONDS: float = Field(default=10.0, gt=0)
    PROGRESS_SECONDS: float = Field(default=2.0, ge=0)
    CANCEL_POLL_SECONDS: float = Field(default=1.0, gt=0)
    REAPER_SECONDS: float = Field(default=30.0, ge=0)  # 0 disables the worker's reaper thread
    # Export every registered version to ONNX (checked against torch on the validation images; model.onnx)
    EXPORT_ONNX: bool = True

    # Serving: the /predict micro-batcher (policy in service/serving/batcher.py)
    PREDICT_MAX_BATCH: int = Field(default=64, ge=1)
    PREDICT_MAX_WAIT_MS: float = Field(default=2.0, ge=0)
    PREDICT_MAX_QUEUE: int = Field(default=1024, ge=1)
    PREDICT_TRACE: bool = True  # serve a TorchScript trace of the network on CPU (torch runtime)
    # onnxruntime: CPU versions with a model.onnx run in ONNX Runtime; torch: always torch; torch-bf16: torch under
    # bf16 autocast, CPU too (service/serving/runtimes.py)
    PREDICT_RUNTIME: Literal["onnxruntime", "torch", "torch-bf16"] = "onnxruntime"
    # torch intra-op threads of the inference thread: "auto" = usable CPUs - 1 (at least 1), 0 = torch's default
    TORCH_THREADS: int | Literal["auto"] = "auto"

    # Observability
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_LEVEL: str = "INFO"
    METRICS_TOKEN: str | None = None  # when set, /metrics needs "Authorization: Bearer <token>"

    _memory_auto: bool = PrivateAttr(default=False)  # WORKER_MEMORY_BYTES was filled in, not set

    @field_validator("TORCH_THREADS", mode="before")
    @classmethod
    def _threads(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower() or "auto"
            if value != "auto":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"must be 'auto' or a whole number >= 0, got {value!r}") from None
        if isinstance(value, int) and value < 0:
            raise ValueError(f"must be 'auto' or a whole number >= 0, got {value}")
        return value

    @field_validator("LOG_FORMAT", "LOG_LEVEL", mode="before")
    @classmethod
    def _lower_format(cls, value: object, info) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if info.field_name == "LOG_LEVEL" else value.lower()
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.DATA_DIR = Path(self.DATA_DIR).expanduser().resolve()
        self.WEIGHTS_DIR = Path(self.WEIGHTS_DIR or self.DATA_DIR / "weights").expanduser().resolve()
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.DATA_DIR / 'headwise.db'}"
        if not self.BROKER_URL:
            self.BROKER_URL = f"sqla+sqlite:///{self.DATA_DIR / 'broker.db'}"
        if not self.WORKER_MEMORY_BYTES:
            self.WORKER_MEMORY_BYTES = int(0.6 * host_memory_bytes())
            self._memory_auto = True
        return self

    @property
    def worker_memory_auto(self) -> bool:
        """True when HEADWISE_WORKER_MEMORY_BYTES was not set (the host default was filled in)."""
        return self._memory_auto

    @property
    def embedded(self) -> bool:
        """True when the broker is the embedded SQLite transport (no Redis)."""
        return self.BROKER_URL.startswith("sqla+")

    @property
    def visibility_timeout(self) -> int:
        """Redis visibility timeout: longer than the longest allowed run."""
        return self.MAX_JOB_SECONDS + 3600


UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)


def cgroup_memory_limit(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int | None:
    """This process's cgroup memory limit in bytes, or None when there is none (or no cgroup is readable):
    cgroup v2 `memory.max` ("max" = none), cgroup v1 `memory/memory.limit_in_bytes`, each at the mount's root
    (a container sees its own cgroup there) and at the process's own cgroup path (/proc/self/cgroup); the
    lowest one found wins."""
    paths: list[str] = [f"{root}/memory.max", f"{root}/memory/memory.limit_in_bytes",
                        f"{root}/memory.limit_in_bytes"]
    try:
        with open(self_cgroup) as f:
            for line in f:
                parts = line.strip().split(":", 2)
                if len(parts) != 3 or parts[2] in ("", "/"):
                    continue
                if parts[0] == "0" and parts[1] == "":  # v2 unified hierarchy
                    paths.append(f"{root}{parts[2]}/memory.max")
                elif "memory" in parts[1].split(","):  # v1 memory controller
                    paths.append(f"{root}/memory{parts[2]}/memory.limit_in_bytes")
    except OSError:
        pass
    limits = []
    for path in paths:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < UNLIMITED:
            limits.append(int(text))
    return min(limits) if limits else None


def host_memory_bytes(meminfo: str = "/proc/meminfo", cgroup_root: str = "/sys/fs/cgroup",
                      self_cgroup: str = "/proc/self/cgroup") -> int:
    """This host's RAM (MemTotal), or this process's cgroup memory limit (v2 or v1) when lower; 8 GiB if
    unknown. The default worker memory budget is 60% of it."""
    total = 8 * 1024**3
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    limit = cgroup_memory_limit(cgroup_root, self_cgroup)
    return min(total, limit) if limit else total


@lru_cache
def get_settings() -> Settings:
    return Settings()
