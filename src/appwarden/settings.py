"""Settings, read once at a composition root (CLI, server, worker) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_URL = "sqlite:///appwarden.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPWARDEN_", extra="ignore")

    env: Literal["production", "development", "test", "demo"] = "development"
    database_url: str = DEFAULT_DB_URL
    clock: str | None = None
    actor: str | None = None
    catalog_file: Path | None = Field(
        default=None, description="Organisation catalog that extends or overrides the shipped one."
    )
    default_time_zone: str = "UTC"
    undo_window_seconds: int = 600
    required_approvals: int = 1
    minimise_personal_data: bool = True
    max_import_bytes: int = 64 * 1024 * 1024
    fault: str | None = None
