"""A node's settings: ``<home>/node.toml`` (written by `barfed node init`) and BARFED_NODE_* variables.

The home comes first (``--home``, else $BARFED_NODE_HOME, else ``.barfed/node``) because the file lives in it.
Precedence: arguments > environment > node.toml.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from protocol.errors import BarFedError

DEFAULT_HOME = Path(".barfed/node")
CONFIG_FILE = "node.toml"
CONFIG_KEYS = ("org_id", "service_address", "enroll_address")  # what `init` writes; the rest are tuning


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
    call_timeout_s: float = Field(default=60.0, gt=0, description="one call waits this long for the coordinator")
    retry_for_s: float = Field(
        default=600.0, ge=0, description="an unreachable coordinator is retried (backoff, jitter) this long"
    )
    wait_timeout_s: float = Field(default=3600.0, gt=0, description="how long --wait follows an enrollment/submission")
    poll_s: float = Field(default=1.0, gt=0, description="how often --wait asks")
    chunk_bytes: int | None = Field(default=None, gt=0, description="upload chunk size (default: the coordinator's)")
    max_bytes_per_s: int | None = Field(
        default=None, gt=0, description="cap on upload and download speed, to share a link (default: none)"
    )

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
    try:
        return NodeSettings(home=home)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BarFedError("BAD_NODE_CONFIG", f"{home / CONFIG_FILE} is not valid: {problems}; fix it.") from None


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
