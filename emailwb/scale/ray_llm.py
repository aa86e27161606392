"""The Ray Data LLM path: exported request lines through vLLM engines on GPU nodes, no servers.

Where ``run_on_ray`` sends request lines to running OpenAI-compatible servers, this path
lets Ray Data start the vLLM engines itself (``ray.data.llm.build_processor`` with a
``vLLMEngineProcessorConfig``): one engine replica per GPU (or per ``concurrency``), each
fed batches of the lines still missing from the output file.

- ``vllm_row`` is the processor's preprocess: a request line's body becomes the row the
  engine stages read, the chat ``messages`` (the chat-template stage applies the model's
  template) and ``sampling_params`` with the body's schema as structured output (vLLM's
  guided decoding: ``structured_outputs={"json": schema}``, or ``{"grammar": ...}`` for a
  line that carries a GBNF grammar). The custom_id rides along in the row.
- ``output_line`` is the postprocess: the engine's ``generated_text`` and token counts
  become a line of the OpenAI batch output format, so ``emailwb batch import --engine
  ray`` reads it like any other output file.
- ``processor_config`` and ``build_vllm_processor`` make the config and the processor;
  ``run_on_vllm`` runs it and appends to the output file (the checkpoint, as in
  ``run_on_ray``).

Building the processor needs Ray's LLM extra on the cluster (``pip install 'ray[llm]'``:
vLLM, transformers, torch) and the model's Hugging Face files (a hub name or a local
folder). The config, preprocess and postprocess need only Ray Data.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emailwb.errors import ConfigError
from emailwb.scale.ray_runner import RayRunReport, error_line, pending_lines, response_line

# Request-body options that vLLM's SamplingParams takes under the same name. Others in a
# body (llama-server's cache_prompt, Ollama spellings) mean nothing to vLLM and are dropped.
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "n",
)
# The part of a body that is not sampling: the request itself and its constraint.
_REQUEST_KEYS = ("model", "messages", "response_format", "grammar", "stream", "stream_options")


def sampling_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM sampling parameters for a chat-completions body, its schema as guided decoding."""
    params = {k: body[k] for k in SAMPLING_KEYS if body.get(k) is not None}
    fmt = body.get("response_format") or {}
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        params["structured_outputs"] = {"json": (fmt.get("json_schema") or {}).get("schema")}
    elif isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        params["structured_outputs"] = {"json_object": True}
    elif body.get("grammar"):
        params["structured_outputs"] = {"grammar": body["grammar"]}
    return params


def dropped_options(body: Mapping[str, Any]) -> list[str]:
    """Options of a body that the vLLM engine path does not pass on."""
    return sorted(k for k in body if k not in SAMPLING_KEYS and k not in _REQUEST_KEYS)


def vllm_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Preprocess: a Ray row holding a request line (``text``) -> the engine stages' row."""
    line = json.loads(str(row["text"]))
    body = line.get("body") or {}
    if not body.get("messages"):
        raise ConfigError(
            f"request line {line.get('custom_id')!r} has no messages",
            hint="run the shards that `emailwb batch export` wrote, unedited",
        )
    return {
        "custom_id": str(line.get("custom_id")),
        "messages": body["messages"],
        "sampling_params": sampling_params(body),
    }


def output_line(row: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Postprocess: an engine output row -> a line of the OpenAI batch output format."""
    cid = str(row.get("custom_id"))
    prompt = int(row.get("num_input_tokens") or 0)
    completion = int(row.get("num_generated_tokens") or 0)
    body = {
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": row.get("generated_text")},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return response_line(f"emailwb-ray-vllm-{cid}", cid, body)


def engine_error_line(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row the engine failed on (Ray's ``__inference_error__``) as an error line."""
    cid = str(row.get("custom_id"))
    message = str(row.get("__inference_error__"))[:500]
    return error_line(f"emailwb-ray-vllm-{cid}", cid, 500, "engine_error", message)


def processor_config(
    model_source: str,
    *,
    concurrency: int = 1,
    batch_size: int = 64,
    max_model_len: int = 8192,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """A ``vLLMEngineProcessorConfig`` for the emailwb requests (chat template applied by
    Ray, output detokenized, prefix caching on: the system prompt is shared by every line)."""
    llm = _ray_data_llm()
    kwargs = {"max_model_len": max_model_len, "enable_prefix_caching": True}
    kwargs.update(engine_kwargs or {})
    return llm.vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs=kwargs,
        concurrency=concurrency,
        batch_size=batch_size,
        chat_template_stage=True,
        tokenize_stage=True,
        detokenize_stage=True,
        should_continue_on_error=True,  # one bad line becomes an error line, not a dead job
    )


_LLM_EXTRA_HINT = (
    "install Ray's LLM extra where the job is started and on the cluster (pip install "
    "'ray[llm]': vLLM, transformers, torch), or use `emailwb batch ray --url` against "
    "running servers"
)


def require_llm_extra() -> None:
    """Fail early, before a cluster is started, where the processor cannot be built."""
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            "the Ray Data LLM path cannot start here: " + " and ".join(missing) + " missing",
            hint=_LLM_EXTRA_HINT,
        )


def build_vllm_processor(config: Any, model: str) -> Any:
    """The Ray Data processor: ``vllm_row`` -> vLLM engine stages -> ``output_line``."""
    llm = _ray_data_llm()
    try:
        return llm.build_processor(
            config,
            preprocess=vllm_row,
            postprocess=lambda row: {"text": json.dumps(output_line(row, model))},
        )
    except ImportError as exc:
        raise ConfigError(
            f"the Ray Data LLM path cannot start here: {exc}", hint=_LLM_EXTRA_HINT
        ) from exc


def run_on_vllm(
    request_files: Sequence[str | Path],
    out: str | Path,
    model_source: str,
    *,
    address: str | None = None,
    concurrency: int = 1,
    batch_size: int = 64,
    max_model_len: int = 8192,
    engine_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> RayRunReport:
    """Run the request lines not yet in ``out`` through vLLM engines that Ray Data starts."""
    import ray
    from tqdm import tqdm

    out_path = Path(out)
    total, todo = pending_lines(request_files, out_path)
    report = RayRunReport(total, total - len(todo), 0, 0, out_path)
    if not todo:
        return report
    require_llm_extra()
    config = processor_config(
        model_source,
        concurrency=concurrency,
        batch_size=batch_size,
        max_model_len=max_model_len,
        engine_kwargs=engine_kwargs,
    )
    started = not ray.is_initialized()  # a cluster started here is shut down here
    if started:
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False)
    try:
        processor = build_vllm_processor(config, model_source)
        results = processor(ray.data.from_items([{"text": x} for x in todo]))
        bar = tqdm(total=len(todo), desc="ray vllm", unit="req", disable=not progress)
        with out_path.open("a", encoding="utf-8") as sink, bar:
            for row in results.iter_rows():
                if row.get("__inference_error__"):
                    line = json.dumps(engine_error_line(row))
                    report.failed += 1
                else:
                    line = str(row["text"])
                sink.write(line + "\n")
                sink.flush()  # each line a checkpoint: a crash keeps what came back
                report.written += 1
                bar.update(1)
    finally:
        if started:
            ray.shutdown()
    return report


def _ray_data_llm() -> Any:
    try:
        from ray.data import llm
    except ImportError as exc:
        raise ConfigError(
            "Ray Data is not installed", hint="pip install 'emailwb[scale]' (or ray[data])"
        ) from exc
    return llm
