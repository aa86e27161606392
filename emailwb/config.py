"""Settings: explicit argument > ``EMAILWB_*`` environment > config file > default.

The config file is TOML: ``$EMAILWB_CONFIG`` if set, else ``./emailwb.toml``, else
``~/.config/emailwb/config.toml``. ``load_settings(**explicit)`` resolves every setting in
that order; arguments that are ``None`` count as "not given".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

BackendKind = Literal["local", "ollama", "openai"]


def config_file() -> Path | None:
    """The config file in force, or None when there is none."""
    env = os.environ.get("EMAILWB_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise ConfigError(
                f"EMAILWB_CONFIG points at {path}, which does not exist",
                hint="create the file or unset EMAILWB_CONFIG",
            )
        return path
    for candidate in (Path("emailwb.toml"), Path("~/.config/emailwb/config.toml").expanduser()):
        if candidate.exists():
            return candidate
    return None


class Settings(BaseSettings):
    """Every knob a user can set; field names map to EMAILWB_<NAME> and TOML keys."""

    model_config = SettingsConfigDict(env_prefix="EMAILWB_", extra="ignore")

    db: Path = Path("emailwb.sqlite")
    backend: BackendKind = "local"
    urls: list[str] = Field(default_factory=list)  # endpoints for ollama/openai backends
    model: str | None = None  # model name (ollama/openai) or GGUF path (local)
    api_key: str | None = Field(default=None, exclude=True, repr=False)  # never stored
    concurrency: str = "auto"  # "auto" or an integer
    max_concurrency: int = 64
    timeout: float = 120.0  # per request, seconds
    retries: int = 4
    max_tokens: int = 768
    temperature: float = 0.0
    token_budget: int = 1500  # prompt tokens for the email text
    chain: bool = False  # send whole threads as one unit
    llama_server: str | None = None  # path to a llama-server binary
    slots: int = 4  # parallel slots of the embedded llama-server
    ctx_per_slot: int = 4096  # >= prompt token budget + max_tokens
    json_format: Literal["schema", "compact"] = "schema"  # see RunConfig.json_format
    sample_every: int = 100  # deep-check every Nth email
    plan: str = "default"  # extraction plan: default | facts | llm | choice | reference

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def concurrency_value(self) -> int | Literal["auto"]:
        """``"auto"`` or a positive int, validated."""
        if str(self.concurrency).strip().lower() == "auto":
            return "auto"
        try:
            n = int(self.concurrency)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(
                f"concurrency must be 'auto' or a positive integer, not {self.concurrency!r}",
                hint="pass --concurrency auto or e.g. --concurrency 8",
            )
        return n


def load_settings(**explicit: Any) -> Settings:
    """Resolve settings: explicit (non-None) arguments win over env, file and defaults."""
    given = {k: v for k, v in explicit.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(
            f"invalid setting {where!r}: {first.get('msg')}",
        ) from exc
