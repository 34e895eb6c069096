#!/usr/bin/env sh
# Creates .venv-sdk/ with the official OpenAI and Anthropic Python SDKs, which
# tests/sdk.rs drives against the mock provider. Safe to run again: an
# existing venv is reused and pip only installs what is missing.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x .venv-sdk/bin/python ]; then
    python3 -m venv .venv-sdk
fi
.venv-sdk/bin/pip install -q --disable-pip-version-check openai anthropic
.venv-sdk/bin/python -c 'import openai, anthropic; print("openai", openai.__version__, "anthropic", anthropic.__version__)'
