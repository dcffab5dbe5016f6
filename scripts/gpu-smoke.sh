#!/usr/bin/env bash
# The GPU smoke test: on a CUDA machine, install aloe with a CUDA build of torch (and vLLM when it
# installs alongside), run the demo recipe on the GPU in bf16 (generation through vLLM when it
# imports), then check from the run's manifest that every model step really ran on the GPU.
#
#   bash scripts/gpu-smoke.sh            # venv in .venv-gpu, run in runs/gpu-smoke-<time>
#
# Environment: ALOE_GPU_VENV (venv folder), ALOE_TORCH (torch spec, default torch==2.13.0),
# ALOE_TORCH_INDEX (CUDA wheel index, default PyTorch's cu128; PyPI's Linux torch is a CUDA build
# too, used when the index cannot be reached), ALOE_SMOKE_RUN (run directory), ALOE_SMOKE_VLLM=0
# (skip vLLM).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ALOE_GPU_VENV:-.venv-gpu}"
TORCH="${ALOE_TORCH:-torch==2.13.0}"
INDEX="${ALOE_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
RUN="${ALOE_SMOKE_RUN:-runs/gpu-smoke-$(date +%Y%m%d-%H%M%S)}"

say() { printf '\n== %s\n' "$*"; }

say "GPU"
if ! command -v nvidia-smi >/dev/null; then
  echo "nvidia-smi not found: this script needs a CUDA machine" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

say "virtual environment $VENV"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

say "torch ($TORCH, CUDA build)"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  pip install --timeout 30 "$TORCH" --index-url "$INDEX" || {
    echo "the CUDA index $INDEX is out of reach: PyPI's torch (a CUDA build on Linux)"
    pip install "$TORCH"
  }
fi
python - <<'EOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA GPU (built for CUDA {torch.version.cuda})"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

say "aloe"
bash scripts/install.sh  # installs into the active venv; keeps the torch above

ENGINE=()
if [ "${ALOE_SMOKE_VLLM:-1}" != 0 ]; then
  say "vLLM (best effort: only if it installs without replacing torch or transformers)"
  pip freeze | grep -iE '^(torch|transformers)==' > "$VENV/aloe-pins.txt"
  if pip install -c "$VENV/aloe-pins.txt" -e ".[vllm]" && python -c "import vllm" 2>/dev/null; then
    # Several small engines live at once in some stages (the open-ended answers and their judge):
    # each claims this fraction of the GPU, so they must fit together.
    ENGINE=(--set engine.name=vllm --set engine.gpu_memory_utilization=0.25)
    echo "vLLM $(python -c 'import vllm; print(vllm.__version__)'): generation goes through it"
  else
    echo "vLLM does not install alongside $(tr '\n' ' ' < "$VENV/aloe-pins.txt"): generation stays on transformers"
  fi
fi

say "the demo recipe on the GPU, bf16 ${ENGINE[*]:-(transformers engine)} -> $RUN"
aloe run demo --run-dir "$RUN" --device cuda --precision bf16 ${ENGINE[@]+"${ENGINE[@]}"}  # empty-safe under set -u

say "where every model ran (from $RUN/manifest.json)"
python -m aloe.recipe.manifest_check "$RUN"
