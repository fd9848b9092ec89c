#!/usr/bin/env bash
# One setup step for everything (README's `make demo` and `make test` both run it):
# system packages, then a virtual environment at .venv with CPU torch and a fairseq that works on
# Python 3.11. Idempotent: a finished install leaves .venv/.installed and is skipped next time
# unless requirements.txt or this script changed (the Makefile tracks both).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null; then
  echo "[install] espeak-ng (offline speech for the demo corpus and test audio)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
# --no-compile: Python compiles only the modules it imports, on first import; byte-compiling all
# of torch and transformers up front took half of the install (172 -> 115 s measured here)
PIP="$PIP install --no-compile"
# The CPU wheel on this kind of machine; a bare `torch` would pull a multi-GB CUDA build.
$PIP torch==2.13.0
# ve-fairseq: a prebuilt cp311 wheel of fairseq 0.12 (see README, "Why ve-fairseq").
# Its declared torchaudio (and whisper's triton) are not needed and torchaudio does not import
# against CPU torch 2.13, so both are installed without dependencies and their real runtime
# dependencies are pinned in requirements.txt.
$PIP --no-deps ve-fairseq==0.12.3 openai-whisper==20250625
$PIP -r requirements.txt
$PIP --no-deps -e .
touch .venv/.installed
echo "[install] done: $(.venv/bin/python -c 'import torch, fairseq, transformers, peft; print("torch", torch.__version__, "fairseq", fairseq.__version__, "transformers", transformers.__version__, "peft", peft.__version__)')"
