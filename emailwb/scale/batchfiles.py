"""OpenAI batch files: export a run's pending units as request lines, import the output.

A request line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body"}``, the body exactly what the processor's OpenAI backend would POST for the unit
(same prompt builder, the plan's schema as ``response_format`` json_schema, the sampling
options, ``max_tokens``). Files are sharded at 50,000 lines or 200 MB (the OpenAI Batch
API's limits) and described by ``manifest.json`` (run, configuration, prompt and schema
hashes, counts, each file's SHA-256). The custom_id is ``emailwb|RUN|UNIT|HASH``: the run,
the unit and the hash of what shapes the request (prompt version, plan, schema, mode).

Import reads output (and error) files in the format the OpenAI Batch API and vLLM's
``run-batch`` write (``{"custom_id", "response": {"status_code", "body"}, "error"}``, or the chat completion
straight in ``response``),
refuses lines of another run or another request hash, and runs a ``Processor`` over the
units that came back with ``BatchReplies`` as its backend: every reply passes the same
schema guard, composition, result writer and provenance as a live one. Importing the same
file twice changes nothing (a done unit is not pending); a truncated file gives its
complete lines; a failed line is a failed unit (``emailwb retry-failed`` re-queues it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from emailwb.engine.library import load_prompt
from emailwb.engine.processor import Processor, RunSummary
from emailwb.engine.requests import plan_schema_hash, request_for
from emailwb.engine.workqueue import WorkQueue
from emailwb.errors import BackendError, BackendRequestError, ConfigError
from emailwb.facts.plans import get_plan
from emailwb.llm.contract import Backend, BackendInfo, CallState, Completion, LLMRequest, Reply
from emailwb.llm.openai import chat_body
from emailwb.quality.watch import QualityConfig
from emailwb.settings import RunConfig
from emailwb.store import batches, runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

MAX_LINES = 50_000  # the OpenAI Batch API's limits per input file
MAX_BYTES = 200 * 1024 * 1024
URL = "/v1/chat/completions"
ENGINES = ("openai-batch", "vllm-run-batch", "ray")


def request_hash(store: Store, cfg: RunConfig) -> str:
    """What shapes a unit's request besides its email: prompt version, plan, schema, mode."""
    plan = get_plan(cfg.plan)
    shape = {
        "prompt": load_prompt(store, cfg.prompt).hash,
        "plan": plan.name,
        "schema": plan_schema_hash(plan),
        "mode": cfg.mode,
        "unit": cfg.unit,
        "token_budget": cfg.token_budget,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]


def custom_id(run: str, unit_id: int, shape: str) -> str:
    return f"emailwb|{run}|{unit_id}|{shape}"


def parse_custom_id(value: Any, where: str) -> tuple[str, int, str]:
    """(run, unit, hash) of an emailwb custom_id; ConfigError for anything else."""
    parts = value.split("|") if isinstance(value, str) else []
    if len(parts) < 4 or parts[0] != "emailwb" or not parts[-2].isdigit():
        raise ConfigError(
            f"{where}: custom_id {value!r} is not one emailwb wrote",
            hint="import only the output of files `emailwb batch export` wrote",
        )
    return "|".join(parts[1:-2]), int(parts[-2]), parts[-1]


@dataclass
class Manifest:
    """What an export wrote (``manifest.json`` beside the files)."""

    run: str
    request_hash: str
    schema_hash: str
    prompt_hash: str
    plan: str
    model: str
    units: int
    files: list[dict[str, Any]]
    config: dict[str, Any]
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Shards:
    """Request lines into ``requests-NNNNN.jsonl`` files, a new one at either limit."""

    def __init__(self, out: Path, prefix: str, max_lines: int, max_bytes: int) -> None:
        self.out, self.prefix = out, prefix
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.files: list[dict[str, Any]] = []
        self._f: IO[bytes] | None = None
        self._digest = hashlib.sha256()
        self._lines = self._bytes = 0

    def _close(self) -> None:
        if self._f is not None:
            self._f.close()
            self.files[-1].update(
                lines=self._lines, bytes=self._bytes, sha256=self._digest.hexdigest()
            )
            self._f = None

    def write(self, line: bytes) -> tuple[str, int]:
        """Write one line; (file name, 1-based line number)."""
        if self._f is not None and (
            self._lines >= self.max_lines or self._bytes + len(line) > self.max_bytes
        ):
            self._close()
        if self._f is None:
            name = f"{self.prefix}-{len(self.files) + 1:05d}.jsonl"
            self.files.append({"name": name})
            self._f = (self.out / name).open("wb")
            self._digest = hashlib.sha256()
            self._lines = self._bytes = 0
        self._f.write(line)
        self._digest.update(line)
        self._lines += 1
        self._bytes += len(line)
        return str(self.files[-1]["name"]), self._lines

    def close(self) -> list[dict[str, Any]]:
        self._close()
        return self.files


def _model(cfg: RunConfig) -> str:
    if not cfg.model:
        raise ConfigError(
            "a batch file names the model the engine serves, and none is set",
            hint="pass --model NAME (for vLLM: the served model name, e.g. the HF repo id)",
        )
    return cfg.model


async def export_batch(
    store: Store,
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    run_name: str | None = None,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
    again: bool = False,
    progress: bool = False,
) -> Manifest:
    """Write the run's pending units (those not already out in a file, unless ``again``)
    as request files under ``out_dir``; opens the run when it is new."""
    plan = get_plan(cfg.plan)
    if not plan.uses_llm:
        raise ConfigError(
            f"plan {plan.name!r} asks no model: there is nothing to send to a batch engine",
            hint="run it locally (`emailwb run --plan facts`), or export a plan that asks "
            "the model (--plan default)",
        )
    model = _model(cfg)
    out = Path(out_dir)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    proc = Processor(store, cfg, None, run_name=run_name, extra_provenance={"engine": "batch"})
    record = await runs.open_run(store, proc.name, cfg.unit, proc.provenance())
    shape = request_hash(store, cfg)
    loaded = await asyncio.to_thread(runs.load_pending, store, record.id, cfg.unit)
    pending = [u.id for u in loaded]
    out_now = {} if again else await asyncio.to_thread(batches.out_units, store, record.id)
    todo = [u for u in pending if u not in out_now]
    prefix = f"requests-{time.strftime('%Y%m%d-%H%M%S')}"
    shards = _Shards(out, prefix, max_lines, max_bytes)
    written: list[tuple[int, str, str, int]] = []
    bar = _bar(len(todo), "export", progress)
    if todo:
        queue = WorkQueue(store, cfg, record.id, batch=256, only=todo)
        await queue.load()
        while (unit := await queue.next()) is not None:
            req = request_for(
                plan,
                unit.messages,
                unit.analysed,
                options=cfg.options,
                grammar=None,
                compact=False,  # a batch engine takes the JSON schema, not llama.cpp's GBNF
                cfg=cfg.model_copy(update={"stream": False}),
                key=str(unit.id),
            )
            cid = custom_id(proc.name, unit.id, shape)
            line = {"custom_id": cid, "method": "POST", "url": URL}
            line["body"] = chat_body(model, cfg.options, req)  # type: ignore[assignment]
            data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            name, n = shards.write(data)
            written.append((unit.id, cid, name, n))
            queue.finished(unit.id)
            bar.update(1)
    files = shards.close()
    bar.close()
    if written:
        await asyncio.to_thread(batches.record_out, store, record.id, written)
    await asyncio.to_thread(runs.set_run_status, store, record.id, "stopped", total=len(pending))
    manifest = Manifest(
        run=proc.name,
        request_hash=shape,
        schema_hash=plan_schema_hash(plan),
        prompt_hash=load_prompt(store, cfg.prompt).hash,
        plan=plan.name,
        model=model,
        units=len(written),
        files=files,
        config=cfg.model_dump(),
        created_at=runs.now_iso(),
    )
    if files:
        text = json.dumps(manifest.as_dict(), indent=2)
        await asyncio.to_thread((out / f"{prefix}.manifest.json").write_text, text)
    return manifest


# --- import ------------------------------------------------------------------------------


@dataclass
class OutputLine:
    """One line of an output or error file, joined to its unit."""

    file: str
    line: int
    unit_id: int
    obj: dict[str, Any]


@dataclass
class ImportReport:
    """What ``import_batch`` did."""

    run: str
    files: list[str]
    lines: int = 0
    incomplete: list[str] = field(default_factory=list)  # "file:line" not parseable
    already: int = 0  # lines of units already done (imported before)
    imported: int = 0
    done: int = 0
    failed: int = 0
    summary: RunSummary | None = None

    def __str__(self) -> str:
        out = (
            f"{self.lines:,} lines from {len(self.files)} file(s) into run {self.run!r}: "
            f"{self.done:,} done, {self.failed:,} failed, {self.already:,} already in the store"
        )
        if self.incomplete:
            out += (
                f"; {len(self.incomplete)} incomplete line(s) skipped (first: "
                f"{self.incomplete[0]}): export again to send those units once more"
            )
        return out


def read_output(paths: Iterable[str | Path]) -> tuple[list[OutputLine], list[str], set[str]]:
    """(lines with an emailwb custom_id, unparseable 'file:line's, run names seen)."""
    found: list[OutputLine] = []
    bad: list[str] = []
    names: set[str] = set()
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(
                f"cannot read {p}: {exc.strerror or exc}", hint="check the path of the output file"
            ) from exc
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                bad.append(f"{p.name}:{n}")  # e.g. the last line of a file cut short
                continue
            if not isinstance(obj, dict):
                bad.append(f"{p.name}:{n}")
                continue
            run, unit, shape = parse_custom_id(obj.get("custom_id"), f"{p.name} line {n}")
            names.add(run)
            obj["_shape"] = shape
            found.append(OutputLine(p.name, n, unit, obj))
    return found, bad, names


def _failed(line: OutputLine) -> bool:
    resp = line.obj.get("response") or {}
    status = resp.get("status_code") if isinstance(resp, Mapping) else None
    return bool(line.obj.get("error")) or (status is not None and status != 200)


def _content(obj: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """(reply text, chat completion body) of a successful line; BackendError otherwise."""
    err = obj.get("error")
    resp = obj.get("response") or {}
    status = resp.get("status_code")
    if err or (status is not None and status != 200):
        what = err.get("message") if isinstance(err, Mapping) else err
        body = resp.get("body") if isinstance(resp, Mapping) else None
        if not what and isinstance(body, Mapping):
            inner = body.get("error")
            what = inner.get("message") if isinstance(inner, Mapping) else inner
        raise BackendRequestError(
            f"{where}: the batch engine reports status {status}: {what or 'no message'}",
            hint="fix the cause (model name, token limit), then `emailwb retry-failed` and "
            "`emailwb batch export` again",
            endpoint=where,
            status=status,
        )
    body = resp.get("body") if "choices" not in resp else resp  # some writers drop the wrapper
    if not isinstance(body, dict):
        body = {}
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendRequestError(
            f"{where}: the line has no chat completion (response.body.choices[0].message)",
            hint="import files in the OpenAI batch output format (vLLM run-batch writes it)",
            endpoint=where,
        ) from exc
    return str(text or ""), body


class BatchReplies(Backend):
    """A backend whose replies are the lines of batch output files, by unit (``req.key``).
    Each reply passes the backend contract's schema guard like a live one; the endpoint it
    reports is ``ENGINE:FILE#LINE``."""

    name = "batch"
    server_kind = "batch-file"

    def __init__(self, lines: Mapping[int, OutputLine], engine: str, model: str) -> None:
        super().__init__(f"{engine}:files", model)
        self.lines = dict(lines)
        self.engine = engine

    def where(self, unit_id: int) -> str:
        line = self.lines.get(unit_id)
        return f"{self.engine}:{line.file}#{line.line}" if line else f"{self.engine}:?"

    async def complete(self, req: LLMRequest) -> Completion:
        comp = await super().complete(req)
        return dataclasses.replace(comp, endpoint=self.where(int(req.key)))

    async def _send(self, req: LLMRequest, t0: float, state: CallState) -> Reply:
        state.got_response = True
        line = self.lines.get(int(req.key))
        if line is None:
            raise BackendRequestError(
                f"no output line for unit {req.key}",
                hint="import the output file that holds it, or export the unit again",
            )
        text, body = _content(line.obj, self.where(line.unit_id))
        usage = body.get("usage") or {}
        choice = body["choices"][0]
        return Reply(
            text=text,
            model=str(body.get("model") or self.model),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
        )

    def _status_error(self, status: int, body: str, headers: Mapping[str, str]) -> BackendError:
        return self.default_status_error(status, body, headers)

    async def info(self) -> BackendInfo:
        return BackendInfo(self.model, None, None, {}, self.server_kind, None, self.url)

    async def warm(self) -> None:
        return None


def run_config(record: runs.RunRecord) -> RunConfig:
    """The configuration a run was opened with (its stored provenance, known keys only)."""
    known = {k: v for k, v in record.config.items() if k in RunConfig.model_fields}
    return RunConfig.model_validate(known)


async def import_batch(
    store: Store,
    files: Sequence[str | Path],
    *,
    run_name: str | None = None,
    engine: str = "openai-batch",
    progress: bool = False,
) -> ImportReport:
    """Store the results in batch output ``files`` under the run they were exported from."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
    lines, bad, names = await asyncio.to_thread(read_output, files)
    report = ImportReport(run_name or "", [Path(f).name for f in files], len(lines), bad)
    if not lines:
        if bad:
            raise ConfigError(
                f"no complete line in {', '.join(report.files)} ({len(bad)} unparseable)",
                hint="check that these are batch output files (one JSON object per line)",
            )
        return report
    if len(names) > 1 or (run_name is not None and names != {run_name}):
        seen = ", ".join(sorted(names))
        raise ConfigError(
            f"the output is from run(s) {seen}"
            + (f", not {run_name!r}" if run_name is not None else ""),
            hint="import each run's files on their own, with --run-name naming that run "
            "(the custom_id's second part)",
        )
    name = next(iter(names))
    report.run = name
    record = await asyncio.to_thread(runs.get_run, store, name)
    if record is None:
        raise ConfigError(
            f"no run named {name!r} in this database",
            hint="import into the database the files were exported from (--db PATH)",
        )
    cfg = run_config(record).model_copy(update={"schema_retries": 0, "retries": 0})
    shape = request_hash(store, cfg)
    for ln in lines:
        if ln.obj["_shape"] != shape:
            raise ConfigError(
                f"{ln.file} line {ln.line} was made under request hash {ln.obj['_shape']}, "
                f"but run {name!r} now sends {shape} (prompt, plan or schema changed)",
                hint="export the run again (`emailwb batch export`) and send the new files; "
                "these replies answer other prompts",
            )
    loaded = await asyncio.to_thread(runs.load_pending, store, record.id, record.unit)
    pending = {u.id for u in loaded}
    by_unit: dict[int, OutputLine] = {}
    for ln in lines:
        if ln.unit_id not in pending:
            report.already += 1
        elif ln.unit_id not in by_unit or (_failed(by_unit[ln.unit_id]) and not _failed(ln)):
            by_unit[ln.unit_id] = ln  # a repeated unit: its first success counts
    if by_unit:
        backend = BatchReplies(by_unit, engine, cfg.model or "")
        bar = _bar(len(by_unit), "import", progress)
        counts = await asyncio.to_thread(runs.run_counts, store, record.id)
        base = counts["done"] + counts["failed"]

        def tick(snap: Any) -> None:
            bar.n = min(snap.done + snap.failed - base, len(by_unit))
            bar.refresh()

        proc = Processor(
            store,
            cfg,
            backend,
            run_name=name,
            only_units=set(by_unit),
            quality=QualityConfig(judge=False),
            extra_provenance={"engine": engine, "batch_files": report.files},
            on_progress=tick,
        )
        report.summary = await proc.run_to_end()
        bar.close()
        col = runs.UNIT_COLUMN[record.unit]
        ids = sorted(by_unit)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in await store.aquery(
                f"SELECT status, COUNT(*) AS n FROM results WHERE run_id = ? AND {col} IN "
                f"({','.join('?' * len(chunk))}) GROUP BY status",
                (record.id, *chunk),
            ):
                if r["status"] == "done":
                    report.done += int(r["n"])
                elif r["status"] == "failed":
                    report.failed += int(r["n"])
        report.imported = len(by_unit)
        await asyncio.to_thread(batches.came_back, store, record.id, by_unit)
    return report


def _bar(total: int, what: str, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="unit", disable=not show or total == 0)
