"""Settings shared by every `barfed` command: ``barfed.toml`` (or $BARFED_CONFIG) and BARFED_* variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from contributor_node.settings import settings_from
from protocol.errors import BarFedError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BARFED_", extra="forbid")

    home: Path = Field(default=Path(".barfed"), description="where `barfed demo` and defaults keep their files")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    num_threads: int | None = Field(
        default=None, gt=0, description="torch CPU threads (at most the cores); all cores by default"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings,
        env_settings,
        dotenv_settings,
        file_secret_settings,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_file()))


def config_file() -> Path:
    return Path(os.environ.get("BARFED_CONFIG", "barfed.toml"))


def load_settings() -> Settings:
    """The settings, or BAD_CONFIG naming the variable or the file to fix (never a traceback)."""
    config = config_file()
    if "BARFED_CONFIG" in os.environ and not config.is_file():
        raise BarFedError("BAD_CONFIG", f"BARFED_CONFIG names {config}, which is not a file; fix or unset it.")
    return settings_from(Settings, config, "BAD_CONFIG")
