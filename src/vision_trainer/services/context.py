"""The objects every use case needs, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ml.runtime import RuntimeOptions, resolve_runtime
from ..settings import Settings
from ..store.db import Database
from ..store.feature_cache import FeatureFileCache
from ..store.files import DataDir
from .caches import PredictorCache, UsageCache


@dataclass
class Services:
    settings: Settings
    db: Database
    files: DataDir
    predictors: PredictorCache
    runtime: RuntimeOptions
    features: FeatureFileCache
    usage: UsageCache = field(default_factory=UsageCache)  # GET /storage's last measurement

    @property
    def device(self) -> str:
        return self.runtime.device

    @classmethod
    def create(cls, settings: Settings) -> Services:
        """Make the data dir and tables if needed and connect to the database."""
        files = DataDir(settings.data_dir)
        files.ensure()
        db = Database(settings.resolved_database_url)
        db.create_tables()
        return cls(
            settings=settings,
            db=db,
            files=files,
            predictors=PredictorCache(settings.model_cache_size),
            runtime=runtime_options(settings),
            features=FeatureFileCache(files.features_dir, max_bytes=int(settings.feature_cache_mb * 2**20)),
        )

    def close(self) -> None:
        self.predictors.clear()
        self.db.dispose()


def runtime_options(settings: Settings) -> RuntimeOptions:
    device = settings.resolved_device()
    return RuntimeOptions(
        kind=resolve_runtime(settings.runtime, device), device=device, cache_dir=settings.resolved_cache_dir
    )
