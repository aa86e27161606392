"""One settings object: explicit argument > EMAILWB_* environment > config file > default,
and the RunConfig it produces carries the same knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailwb.errors import ConfigError
from emailwb.settings import RunConfig, RunKnobs, load_settings, parse_concurrency


def test_each_setting_resolves_argument_then_environment_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "emailwb.toml"
    config.write_text('model = "from-file"\ntimeout = 30\nretries = 7\nplan = "facts"\n')
    monkeypatch.setenv("EMAILWB_CONFIG", str(config))
    monkeypatch.setenv("EMAILWB_MODEL", "from-env")
    monkeypatch.setenv("EMAILWB_TIMEOUT", "45")
    settings = load_settings(model="from-argument")
    assert settings.model == "from-argument"  # argument over environment and file
    assert settings.timeout == 45.0  # environment over file
    assert settings.retries == 7 and settings.plan == "facts"  # file over default
    assert settings.slots == 4  # default
    monkeypatch.delenv("EMAILWB_TIMEOUT")
    assert load_settings().timeout == 30.0


def test_a_run_configuration_takes_every_shared_knob_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./emailwb.toml
    monkeypatch.delenv("EMAILWB_CONFIG", raising=False)
    settings = load_settings(
        backend="openai",
        urls=["http://gpu:8000/v1"],
        model="m",
        concurrency="6",
        timeout=9.0,
        slots=2,
        max_tokens=300,
        plan="llm",
        chain=True,
    )
    config = RunConfig.from_settings(settings)
    for name in RunKnobs.model_fields:
        assert getattr(config, name) == getattr(settings, name), name
    assert config.concurrency == 6 and config.options["num_predict"] == 300
    reference = RunConfig.from_settings(settings, "reference")
    assert reference.concurrency == 1 and reference.plan == "reference"  # its defining choices


@pytest.mark.parametrize("bad", ["0", "x", -1, True, None])
def test_concurrency_has_one_rule_everywhere(bad: object) -> None:
    with pytest.raises(ConfigError, match="--concurrency auto"):
        parse_concurrency(bad)
    with pytest.raises(ConfigError, match="concurrency"):
        load_settings(concurrency=bad) if bad is not None else load_settings(concurrency=0)
    with pytest.raises(ValueError, match="positive integer"):
        RunConfig(concurrency=bad if bad is not None else 0)
    assert parse_concurrency(" AUTO ") == "auto" and parse_concurrency("12") == 12
