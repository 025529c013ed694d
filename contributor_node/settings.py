"""A node's settings: ``<home>/node.toml`` (written by `barfed node init`) and BARFED_NODE_* variables.

The home comes first (``--home``, else $BARFED_NODE_HOME, else ``.barfed/node``) because the file lives in it.
Precedence: arguments > environment > node.toml.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bar_model.recipe import TRACKERS, Tracker
from protocol.errors import BarFedError

DEFAULT_HOME = Path(".barfed/node")
CONFIG_FILE = "node.toml"
CONFIG_KEYS = ("org_id", "service_address", "enroll_address")  # what `init` writes; the rest are tuning
S = TypeVar("S", bound=BaseSettings)


def node_home(home: Path | None = None) -> Path:
    return Path(home or os.environ.get("BARFED_NODE_HOME") or DEFAULT_HOME)


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BARFED_NODE_", extra="forbid")

    home: Path = Field(default=DEFAULT_HOME, description="keys, certificate, anchor, experts, packages, state")
    org_id: str = Field(description="this organization's id, as the coordinator's invitation names it")
    service_address: str = Field(description="host:port of the coordinator's gRPC service (mutual TLS)")
    enroll_address: str = Field(description="host:port of the coordinator's enrollment port (TLS)")
    recipe: str = Field(default="tiny", description="expert recipe for `train` (a name or a TOML file)")
    router_recipe: str = Field(
        default="tiny", description="router recipe whose fraction sizes the calibration sample `package` includes"
    )
    report_to: Annotated[list[Tracker] | None, NoDecode] = Field(
        default=None,
        description="experiment trackers `train` reports to instead of the recipe's (tensorboard, mlflow, wandb; "
        "comma-separated in BARFED_NODE_REPORT_TO, empty for none)",
    )
    call_timeout_s: float = Field(default=60.0, gt=0, description="one call waits this long for the coordinator")
    interactive_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="status, enroll without --wait and fetch-anchor's check give up on a silent coordinator this soon",
    )
    retry_for_s: float = Field(
        default=600.0, ge=0, description="an unreachable coordinator is retried (backoff, jitter) this long"
    )
    wait_timeout_s: float = Field(default=3600.0, gt=0, description="how long --wait follows an enrollment/submission")
    poll_s: float = Field(default=1.0, gt=0, description="how often --wait asks")
    chunk_bytes: int | None = Field(default=None, gt=0, description="upload chunk size (default: the coordinator's)")
    max_bytes_per_s: int | None = Field(
        default=None, gt=0, description="cap on upload and download speed, to share a link (default: none)"
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _split_trackers(cls, value):
        """A list (node.toml) or comma-separated names (the variable); an unknown one named as the setting's fault."""
        names = [name.strip() for name in value.split(",") if name.strip()] if isinstance(value, str) else value
        unknown = [n for n in names if not (isinstance(n, str) and n in TRACKERS)] if isinstance(names, list) else []
        if unknown:
            raise ValueError(f"unknown tracker(s) {unknown}; name some of {', '.join(TRACKERS)}")
        return names

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        home = node_home(init_settings.init_kwargs.get("home"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=home / CONFIG_FILE))

    @property
    def ca_path(self) -> Path:
        return self.home / "ca.pem"

    @property
    def release_key_path(self) -> Path:
        return self.home / "release.pub"


def load_node_settings(home: Path | None = None) -> NodeSettings:
    """The settings of the node at ``home``; NOT_INITIALIZED when `barfed node init` has not run there."""
    home = node_home(home)
    if not (home / CONFIG_FILE).is_file():
        raise BarFedError(
            "NOT_INITIALIZED", f"{home} is not a node home (no {CONFIG_FILE}); run `barfed node init` first."
        )
    return settings_from(NodeSettings, home / CONFIG_FILE, "BAD_NODE_CONFIG", home=home)


def settings_from(cls: type[S], config: Path, code: str, **values) -> S:
    """``cls(**values)``, or one refusal that names what to fix: the variable when one is set
    (``BARFED_NODE_RETRY_FOR_S='abc'``), else the key in ``config``, or ``config`` itself when it is no TOML."""
    try:
        return cls(**values)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BarFedError(code, f"{config} is not valid TOML ({exc}); fix it.") from None
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = "; ".join(_problem(error, prefix, config) for error in exc.errors())
        raise BarFedError(code, f"{problems}; fix it.") from None


def _problem(error, prefix: str, config: Path) -> str:
    key = ".".join(map(str, error["loc"]))
    variable = f"{prefix}{key}".upper()
    value = next((v for k, v in os.environ.items() if k.upper() == variable), None)  # matched case-insensitively
    if value is not None:
        return f"{variable}={value[:100]!r}: {error['msg']}"
    return f"{key} in {config}: {error['msg']}"


def write_config(home: Path, values: dict[str, str]) -> Path:
    """``node.toml`` with ``values`` (strings only), written atomically."""
    path = home / CONFIG_FILE
    lines = [f"{key} = {_toml_string(value)}\n" for key, value in values.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# written by `barfed node init`; BARFED_NODE_* variables override it\n" + "".join(lines))
    os.replace(tmp, path)
    return path


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
