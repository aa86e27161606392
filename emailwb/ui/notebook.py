"""Running emailwb's async work from notebooks, and running the notebooks themselves.

Job: widgets start long work (a processor run, a live chart refresher) as tasks on the
kernel's own event loop, so a cell returns at once and the kernel stays responsive while
the run goes on; ``spawn`` does that and never lets a task's exception vanish (it goes to
an ``ErrorLog``, whose ``Output`` widget shows it under the panel). ``run_sync`` runs a
coroutine to the end from synchronous code, also inside a kernel whose loop is already
running (that is where nest-asyncio is needed). ``parameterize`` and ``execute`` run a
notebook headless with new values for its ``parameters`` cell through papermill (an
``injected-parameters`` cell right after it), which is how the tests and CI run them.
"""

from __future__ import annotations

import asyncio
import functools
import html
import traceback
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from emailwb.errors import ConfigError

T = TypeVar("T")
_TASKS: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones


class ErrorLog:
    """Collects callback errors into an ``ipywidgets.Output`` (and a list, for tests).

    ``capture(fn)`` wraps a widget callback; ``report(exc)`` records an exception caught
    elsewhere (a failed task). Nothing is swallowed: the traceback lands in ``output``.
    """

    def __init__(self, output: Any | None = None, *, keep: int = 50) -> None:
        import ipywidgets as w

        self.output = (
            output
            if output is not None
            else w.Output(layout=w.Layout(max_height="240px", overflow="auto"))
        )
        self.output.add_class("emailwb-errors")
        self.errors: list[BaseException] = []
        self.keep = keep

    def report(self, exc: BaseException, where: str = "") -> None:
        """Show ``exc`` with its traceback in the Output widget and remember it."""
        self.errors.append(exc)
        del self.errors[: -self.keep]
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        head = f"error{' in ' + where if where else ''}: {type(exc).__name__}: {exc}\n"
        self.output.append_stderr(head + text)

    def clear(self) -> None:
        self.errors.clear()
        self.output.outputs = ()

    def capture(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a callback: its exception (or its coroutine's) is reported, not raised."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                self.report(exc, getattr(fn, "__name__", ""))
                return None
            if asyncio.iscoroutine(result):
                return spawn(result, errors=self, name=getattr(fn, "__name__", None))
            return result

        return wrapper

    @contextmanager
    def guard(self, where: str = "") -> Iterator[None]:
        """``with log.guard(): ...`` reports an exception of the block instead of raising it."""
        try:
            yield
        except Exception as exc:
            self.report(exc, where)

    @property
    def text(self) -> str:
        """Everything shown so far (for tests)."""
        return "".join(str(o.get("text", "")) for o in self.output.outputs)


def running_loop() -> asyncio.AbstractEventLoop:
    """The kernel's running event loop (ipykernel runs cells and widget callbacks on it)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            "no running event loop: emailwb's widgets need a Jupyter kernel "
            "(or an asyncio program)",
            hint="use them in JupyterLab/Voila, or call them from async code",
        ) from None


def spawn(
    coro: Coroutine[Any, Any, T], *, errors: ErrorLog | None = None, name: str | None = None
) -> asyncio.Task[T]:
    """Run ``coro`` as a task on the kernel's loop; its exception goes to ``errors``."""
    try:
        loop = running_loop()
    except ConfigError:
        coro.close()
        raise
    task = loop.create_task(coro, name=name)
    _TASKS.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _TASKS.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            if errors is not None:
                errors.report(exc, name or "")
            else:  # still visible: the loop's exception handler logs it
                loop.call_exception_handler(
                    {"message": f"emailwb task {name} failed", "exception": exc, "task": t}
                )

    task.add_done_callback(done)
    return task


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    Outside a loop this is ``asyncio.run``; inside a kernel (loop already running) it
    applies nest-asyncio to that loop so the coroutine can run without a second loop.
    Prefer ``await`` in notebook cells: it keeps the kernel's other tasks going.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import nest_asyncio

    nest_asyncio.apply(loop)
    return loop.run_until_complete(coro)


def escape(value: Any) -> str:
    """Text from an email (or a model's reply about one) made safe inside HTML."""
    return html.escape("" if value is None else str(value), quote=True)


# --- running notebooks headless (papermill) ------------------------------------------------------
def _check_parameters_cell(notebook: str | Path, nb: Any) -> None:
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ConfigError(
            f"{notebook} has no cell tagged 'parameters'",
            hint="tag the first code cell 'parameters' (View > Cell tags)",
        )


def parameterize(
    notebook: str | Path,
    params: Mapping[str, Any],
    out: str | Path | None = None,
    *,
    kernel_name: str = "python3",
) -> Any:
    """The notebook with papermill's ``injected-parameters`` cell after its ``parameters`` cell.

    Returns the nbformat notebook, also written to ``out`` when given (what Voila serves).
    ``kernel_name`` is the kernel whose language the values are written in, when the
    notebook names none.
    """
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(notebook))
    _check_parameters_cell(notebook, nb)
    spec = nb.metadata.get("kernelspec", {})
    nb = parameterize_notebook(
        nb,
        dict(params),
        kernel_name=spec.get("name") or kernel_name,
        language=spec.get("language")
        or nb.metadata.get("language_info", {}).get("name")
        or "python",
    )
    if out is not None:
        nbformat.write(nb, str(out))
    return nb


def execute(
    notebook: str | Path,
    params: Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    kernel_name: str = "python3",
) -> Any:
    """Run a notebook headless with papermill (cell timeout ``timeout`` s); the executed notebook.

    Raises papermill's ``PapermillExecutionError`` (naming the failing cell and its
    traceback) on error; the partly executed notebook is still written to ``out``.
    """
    import tempfile

    import nbformat
    import papermill

    _check_parameters_cell(notebook, nbformat.read(str(notebook), as_version=4))
    with tempfile.TemporaryDirectory(prefix="emailwb-nb-") as tmp:
        target = Path(out) if out is not None else Path(tmp) / Path(notebook).name
        return papermill.execute_notebook(
            str(notebook),
            str(target),
            parameters=dict(params or {}),
            kernel_name=kernel_name,
            cwd=str(cwd or Path(notebook).parent),
            progress_bar=False,
            log_output=False,
            execution_timeout=int(timeout),
        )


def outputs_text(nb: Any) -> str:
    """All text outputs of an executed notebook (streams and text/plain), for checks."""
    parts: list[str] = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if "text" in o:
                parts.append(str(o["text"]))
            data = o.get("data", {})
            if "text/plain" in data:
                parts.append(str(data["text/plain"]))
    return "\n".join(parts)
