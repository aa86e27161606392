"""The project's exception tree: every error a user can see, each naming the next action.

Every module raises only these (wrapping third-party errors with ``raise ... from exc``),
so callers can catch ``EmailwbError`` and print ``str(err)``: the message always says what
happened and what the user can do about it.
"""

from __future__ import annotations


class EmailwbError(Exception):
    """Base of every emailwb error. ``str(err)`` is a complete, actionable message."""

    #: one line telling the user what to do next; appended to the message
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        if hint is not None:
            self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} -> {self.hint}"
        return self.message


class ConfigError(EmailwbError):
    """A setting is missing or has a value that cannot work."""

    hint = "fix the argument, the EMAILWB_* environment variable or the config file"


# --- input / ingest -------------------------------------------------------------------
class InputError(EmailwbError):
    """Something the user gave us (a file, a folder, a column) cannot be read."""

    hint = "check the path and the file format; see `emailwb ingest --help`"


class EmailParseError(InputError):
    """One message could not be turned into an Email record (it goes to ingest_errors)."""

    hint = "the message is kept in the ingest_errors table; fix or remove the file and ingest again"


class NotAMessage(EmailParseError):
    """The input is not mail at all: empty, binary, or no header lines (not counted as read)."""

    hint = "fix or remove the file, or point emailwb at the mail only (`emailwb errors` lists them)"


# --- store ------------------------------------------------------------------------------
class StoreError(EmailwbError):
    """The SQLite store cannot be opened, migrated or written."""

    hint = "check that the database path is writable and not used by an older emailwb"


class MigrationError(StoreError):
    """The database schema is newer than this emailwb or a migration failed."""

    hint = "upgrade emailwb, or point --db at a fresh file"


# --- backends ---------------------------------------------------------------------------
class BackendError(EmailwbError):
    """Base for errors talking to an LLM server. ``transient`` says whether a retry may help."""

    transient: bool = False
    hint = "check the backend URL and that the server is running"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        endpoint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.endpoint = endpoint
        self.status = status
        self.retry_after = retry_after
        self.raw = raw


class BackendUnavailable(BackendError):
    """Connection refused or reset, DNS failure, or the server went away mid-request."""

    transient = True
    hint = (
        "start the server (or check the URL); a run in progress retries it on its own, a "
        "stopped one resumes when you run the same command again"
    )


class BackendTimeout(BackendError):
    """The request took longer than the per-request timeout."""

    transient = True
    hint = "raise --timeout, lower concurrency, or use a faster model"


class BackendOverloaded(BackendError):
    """HTTP 429 or 503: the server is asking us to slow down (Retry-After honoured)."""

    transient = True
    hint = "emailwb backs off automatically; lower concurrency or add server slots (OLLAMA_NUM_PARALLEL, llama-server -np)"


class BackendServerError(BackendError):
    """HTTP 5xx other than 503: the server failed on this request."""

    transient = True
    hint = "look at the server's log; emailwb retries transient failures"


class BackendProtocolError(BackendError):
    """The server answered with something that is not its protocol (bad JSON, cut stream)."""

    transient = True
    hint = "check that the URL points at the right kind of server (--backend ollama|openai)"


class BackendRequestError(BackendError):
    """HTTP 4xx: our request was refused (bad model name, auth, context too long). Not retried."""

    transient = False
    hint = "check the model name, the API key (OPENAI_API_KEY) and the context size"


class ModelNotFound(BackendRequestError):
    """The server does not have the requested model."""

    hint = "pull the model (`ollama pull NAME`) or pass --model with a model the server has"


class SchemaViolation(BackendError):
    """The reply parsed but does not validate against the output schema (fail-closed guard).

    ``finish_reason`` is why the server says the reply ended, as it reported it (OpenAI's
    ``choices[0].finish_reason``, Ollama's ``done_reason``): ``"length"`` means the reply was
    cut at the token limit, which a retry with more room can fix. None when not reported.
    """

    transient = True
    hint = "the raw reply is kept; try a larger model or check that the server honours JSON schemas"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        endpoint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        raw: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        super().__init__(
            message, hint=hint, endpoint=endpoint, status=status, retry_after=retry_after, raw=raw
        )
        self.finish_reason = finish_reason


class LocalServerError(BackendError):
    """The embedded llama-server could not be found, started or kept alive."""

    transient = False
    hint = "run the README's setup command (it builds llama-server), or pass --llama-server PATH"


class CircuitOpen(BackendError):
    """Too many consecutive failures on an endpoint: it is rested for a while."""

    transient = True
    hint = "the endpoint is retried after a pause; check its health"


# --- processing -------------------------------------------------------------------------
class ProcessingError(EmailwbError):
    """A run cannot start or continue."""

    hint = "see `emailwb status --json` and the run's errors; `emailwb retry-failed` re-queues failures"
