"""Configuration: ``Settings`` (what a user sets) and the ``RunConfig`` it produces.

``Settings`` resolves explicit argument > ``EMAILWB_*`` environment > config file > default.

The config file is TOML: ``$EMAILWB_CONFIG`` if set, else ``./emailwb.toml``, else
``~/.config/emailwb/config.toml``. ``load_settings(**explicit)`` resolves every setting in
that order; arguments that are ``None`` count as "not given".

``RunConfig`` is how one run processes its units (``RunConfig.from_settings``). Two named
configurations: ``RunConfig.default()`` (emailwb's design) and ``RunConfig.reference()``
(the original: raw bodies, one request at a time, a fixed sleep between emails, a new
SQLite connection per write, the email before the instructions).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from emailwb.errors import ConfigError
from emailwb.store.runs import DEFAULT_PROFILE, UnitKind

BackendKind = Literal["local", "ollama", "openai"]


def parse_concurrency(value: Any) -> int | Literal["auto"]:
    """``"auto"`` or a positive integer, from a flag, the environment, a file or code.

    The one rule for concurrency: ``Settings``, ``RunConfig`` and the concurrency
    controllers all use it. Raises ``ConfigError`` naming the flag to fix.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value) if not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(
            f"concurrency must be 'auto' or a positive integer, not {value!r}",
            hint="pass --concurrency auto or e.g. --concurrency 8",
        )
    return n


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


class RunKnobs(BaseModel):
    """The knobs a user sets that a run keeps: defined once, shared by ``Settings`` (where
    they are read from flags, the environment and the config file) and ``RunConfig`` (what a
    run records in its provenance)."""

    backend: BackendKind = "local"
    urls: list[str] = Field(default_factory=list)  # endpoints for ollama/openai backends
    model: str | None = None  # model name (ollama/openai) or GGUF path (local)
    concurrency: int | Literal["auto"] = "auto"  # requests in flight: "auto" finds the knee
    max_concurrency: int = 64
    timeout: float = 120.0  # seconds per request
    retries: int = 4  # retries of a transient failure (so up to retries + 1 attempts)
    token_budget: int = 1500  # prompt tokens for the email text
    chain: bool = False  # one unit per thread
    llama_server: str | None = None  # path to a llama-server binary (local backend)
    slots: int = 4  # parallel slots of the embedded llama-server
    ctx_per_slot: int = 4096  # >= the prompt token budget + num_predict
    # how the reply's JSON is constrained: the JSON schema, or the same schema as a GBNF
    # grammar without whitespace (llama-server only; ``emailwb.llm.grammar``): about 30% fewer
    # completion tokens, but SmolLM2 agreed less with the type rules (docs/performance.md)
    json_format: Literal["schema", "compact"] = "schema"
    # which source each field comes from (``emailwb.facts.plans``): "default" takes every
    # field from its measurably best source; "llm" asks the model for all of them
    plan: str = "default"
    # which prompt version the model is sent (``emailwb.engine.library``): "builtin" or a version
    # saved in the store by the prompt lab
    prompt: str = "builtin"

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, v: Any) -> int | Literal["auto"]:
        try:
            return parse_concurrency(v)
        except ConfigError as exc:  # reported by pydantic with the field's name
            raise ValueError(exc.message) from None

    @field_validator("plan")
    @classmethod
    def _known_plan(cls, v: str) -> str:
        from emailwb.facts.plans import get_plan

        return get_plan(v).name

    @field_validator("prompt")
    @classmethod
    def _prompt_name(cls, v: str) -> str:
        from emailwb.llm.prompts import check_name

        try:
            return check_name(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None


class Settings(RunKnobs, BaseSettings):
    """Every knob a user can set; field names map to EMAILWB_<NAME> and TOML keys."""

    model_config = SettingsConfigDict(env_prefix="EMAILWB_", extra="ignore")

    db: Path = Path("emailwb.sqlite")
    api_key: str | None = Field(default=None, exclude=True, repr=False)  # never stored
    max_tokens: int = 768  # completion tokens per request (the run's num_predict)
    temperature: float = 0.0
    sample_every: int = 100  # deep-check every Nth email

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


class RunConfig(RunKnobs):
    """How a run processes its units. Serialised (minus secrets) into ``runs.config``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str = "default"  # the named configuration this started from
    options: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0.0, "num_predict": 768}
    )
    schema_retries: int = 1  # a reply that breaks the schema is asked again this often
    backoff_base: float = 0.5  # first retry delay, doubled per attempt, with jitter
    backoff_max: float = 30.0
    breaker_threshold: int = 5  # consecutive failures that open an endpoint's breaker
    breaker_cooldown: float = 2.0  # first rest of an open breaker, doubled per reopening
    stream: bool = True  # stream replies (gives time to first token)
    mode: Literal["clean", "raw"] = "clean"  # new text only, or whole raw bodies
    dedup: bool = True  # one unit per content group (False: one per email)
    layout: Literal["shared_prefix", "email_first"] = "shared_prefix"
    sleep_between: float = 0.0  # seconds between emails (the reference design's 2 s)
    write_mode: Literal["batched", "connection_per_write"] = "batched"
    template: str | None = None  # force one template; None picks by detected type
    priority_profile: str = DEFAULT_PROFILE

    @model_validator(mode="after")
    def _format_fits_backend(self) -> RunConfig:
        if self.json_format == "compact" and self.backend == "ollama":
            raise ValueError(
                "json_format 'compact' sends a GBNF grammar, which Ollama's API "
                "does not take: use 'schema' with the ollama backend"
            )
        return self

    @property
    def compact_json(self) -> bool:
        """Whether requests carry the whitespace-free grammar instead of the JSON schema."""
        return self.json_format == "compact"

    @property
    def unit(self) -> UnitKind:
        """What one LLM call covers under this configuration."""
        return "thread" if self.chain else ("group" if self.dedup else "email")

    # --- the named configurations -----------------------------------------------------------
    @classmethod
    def default(cls, **overrides: Any) -> RunConfig:
        """emailwb's design: deduplicated, cleaned, shared prefix, auto concurrency, batched."""
        return cls(**{"preset": "default", **overrides})

    @classmethod
    def reference(cls, **overrides: Any) -> RunConfig:
        """The original design, the baseline of benchmarks and A/B tests.

        Raw bodies, every email sent (no deduplication), one request at a time, a fixed
        ``sleep_between`` (2 s) after each email, a new SQLite connection per write, the
        email before the instructions (no prompt prefix shared between requests), and the
        server's own JSON-schema constraint (whitespace allowed, as it pretty-prints).
        """
        base = {
            "preset": "reference",
            "plan": "reference",
            "mode": "raw",
            "dedup": False,
            "chain": False,
            "concurrency": 1,
            "layout": "email_first",
            "sleep_between": 2.0,
            "write_mode": "connection_per_write",
            "json_format": "schema",
        }
        return cls(**{**base, **overrides})

    @classmethod
    def named(cls, name: str, **overrides: Any) -> RunConfig:
        """``"default"`` or ``"reference"``."""
        presets = {"default": cls.default, "reference": cls.reference}
        if name not in presets:
            raise ConfigError(
                f"unknown run configuration {name!r}", hint="use 'default' or 'reference'"
            )
        return presets[name](**overrides)

    @classmethod
    def from_settings(
        cls, settings: Settings, preset: str = "default", **overrides: Any
    ) -> RunConfig:
        """Build from ``emailwb.settings.Settings`` (the API key stays out: pass it separately)."""
        base: dict[str, Any] = {name: getattr(settings, name) for name in RunKnobs.model_fields}
        base["options"] = {"temperature": settings.temperature, "num_predict": settings.max_tokens}
        if preset == "reference":  # the reference design keeps its own defining choices
            for key in ("concurrency", "chain", "json_format", "plan"):
                base.pop(key)
        return cls.named(preset, **{**base, **overrides})
