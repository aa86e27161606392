"""The Ray Data LLM path: exported lines as vLLM engine rows and engine rows as output lines.

The rows are made from request lines that ``batch export`` wrote for the bundled Enron
sample; the "engine" that turns a row into generated text is the embedded llama-server
(SmolLM2), sent only what the row holds (its messages, its sampling parameters, its
structured-output schema), so a row that lost part of its request would show here as an
invalid reply. The engine's output rows go through ``output_line`` into a file that
``batch import`` stores. The config is a real ``vLLMEngineProcessorConfig``; building the
processor itself needs torch and transformers (Ray's LLM extra), and is tested where they
are installed, with the clear error tested where they are not.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip("ray", reason="Ray is the scale extra: pip install 'emailwb[scale]'")

from emailwb.errors import ConfigError
from emailwb.scale.batchfiles import export_batch, import_batch
from emailwb.scale.ray_llm import (
    SAMPLING_KEYS,
    build_vllm_processor,
    engine_error_line,
    output_line,
    processor_config,
    vllm_row,
)
from emailwb.settings import RunConfig
from emailwb.store import runs
from emailwb.ui import explore

pytestmark = pytest.mark.timeout(300)
HAS_LLM_EXTRA = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


async def exported_lines(store: Any, sample_dir: Path, tmp_path: Path, cfg: RunConfig) -> list:
    explore.ingest_mailbox(store, sample_dir, progress=False, workers=0)
    man = await export_batch(store, cfg, tmp_path / "req", run_name="vllm")
    return [
        json.loads(ln)
        for f in man.files
        for ln in (tmp_path / "req" / f["name"]).read_text().splitlines()
    ]


async def test_engine_rows_carry_the_whole_request_with_the_schema_as_guided_decoding(
    store: Any, sample_dir: Path, tmp_path: Path
) -> None:
    cfg = RunConfig.default(
        backend="openai", urls=["http://gpu:8000/v1"], model="m", plan="default"
    ).model_copy(update={"options": {"temperature": 0.1, "max_tokens": 300, "cache_prompt": True}})
    lines = await exported_lines(store, sample_dir, tmp_path, cfg)
    assert len(lines) > 10
    for line in lines:
        row = vllm_row({"text": json.dumps(line)})
        body = line["body"]
        assert row["custom_id"] == line["custom_id"]
        assert row["messages"] == body["messages"]
        params = row["sampling_params"]
        schema = body["response_format"]["json_schema"]["schema"]
        assert params["structured_outputs"] == {"json": schema}
        assert params["max_tokens"] == 300 and params["temperature"] == 0.1
        # only names vllm.SamplingParams takes; llama-server's cache_prompt is dropped
        assert set(params) - {"structured_outputs"} <= set(SAMPLING_KEYS)
        assert "cache_prompt" not in params


@pytest.mark.llm
async def test_engine_output_rows_import_as_schema_valid_results(
    store: Any, sample_dir: Path, tmp_path: Path
) -> None:
    from emailwb.engine.batch import open_backend, with_local_sampling

    cfg = with_local_sampling(RunConfig.default(backend="local", plan="default"))
    lines = await exported_lines(
        store, sample_dir, tmp_path, cfg.model_copy(update={"model": cfg.model or "local"})
    )
    rows = [vllm_row({"text": json.dumps(ln)}) for ln in lines[:4]]
    out: list[dict[str, Any]] = []
    async with open_backend(cfg) as opened, aiohttp.ClientSession() as http:
        url = opened.backend.url.rstrip("/") + "/chat/completions"
        for row in rows[:3]:
            params = dict(row["sampling_params"])
            schema = params.pop("structured_outputs")["json"]
            body = {
                "messages": row["messages"],
                "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
                **params,
            }
            async with http.post(url, json=body) as resp:
                reply = await resp.json()
            engine_row = {  # what Ray's vLLM stages hand the postprocess
                **row,
                "generated_text": reply["choices"][0]["message"]["content"],
                "num_input_tokens": reply["usage"]["prompt_tokens"],
                "num_generated_tokens": reply["usage"]["completion_tokens"],
            }
            out.append(output_line(engine_row, "HuggingFaceTB/SmolLM2-135M-Instruct"))
    out.append(engine_error_line({**rows[3], "__inference_error__": "CUDA out of memory"}))
    path = tmp_path / "vllm-out.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in out))

    report = await import_batch(store, [path], engine="ray")
    assert report.imported == 4 and report.failed >= 1
    assert report.done + report.failed == 4 and report.done >= 2  # SmolLM2 under the schema
    record = runs.get_run(store, "vllm")
    stored = store.query(
        "SELECT status, data, reason, endpoint FROM results WHERE run_id = ?", (record.id,)
    )
    assert any("CUDA out of memory" in (r["reason"] or "") for r in stored)
    for r in stored:
        assert r["endpoint"].startswith("ray:vllm-out.jsonl#")
        if r["status"] == "done":
            assert json.loads(r["data"])["email_type"]  # composed like a live result


def test_the_processor_config_runs_vllm_with_the_chat_template_and_keeps_going_on_errors() -> None:
    config = processor_config("meta-llama/Llama-3.1-8B-Instruct", concurrency=4, max_model_len=4096)
    assert type(config).__name__ == "vLLMEngineProcessorConfig"
    assert config.model_source == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.concurrency == 4
    assert config.engine_kwargs["max_model_len"] == 4096
    assert config.engine_kwargs["enable_prefix_caching"] is True
    assert config.should_continue_on_error is True
    assert config.chat_template_stage and config.detokenize_stage


@pytest.mark.skipif(not HAS_LLM_EXTRA, reason="building needs torch and transformers (ray[llm])")
def test_the_vllm_processor_builds_with_its_stages(tmp_path: Path) -> None:
    model = tmp_path / "tiny-llama"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "num_key_value_heads": 4,
                "vocab_size": 1000,
            }
        )
    )
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        processor = build_vllm_processor(processor_config(str(model)), "tiny-llama")
        assert list(processor.stages) == [
            "ChatTemplateStage",
            "TokenizeStage",
            "vLLMEngineStage",
            "DetokenizeStage",
        ]
    finally:
        ray.shutdown()


@pytest.mark.skipif(HAS_LLM_EXTRA, reason="torch and transformers are installed here")
def test_batch_ray_with_vllm_but_without_rays_llm_extra_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emailwb.cli import main

    req = tmp_path / "requests-00001.jsonl"
    line = {"custom_id": "emailwb|r|1|abc", "method": "POST", "url": "/v1/chat/completions"}
    req.write_text(json.dumps({**line, "body": {"messages": [{"role": "user", "content": "x"}]}}))
    out = tmp_path / "out.jsonl"
    code = main(["batch", "ray", str(req), "--out", str(out), "--vllm-model", "some/model"])
    said = capsys.readouterr().err
    assert code == 2
    assert "torch" in said and "ray[llm]" in said and "--url" in said
    assert not out.exists() or out.read_text() == ""
    with pytest.raises(ConfigError, match="ray\\[llm\\]"):
        build_vllm_processor(processor_config("some/model"), "m")
