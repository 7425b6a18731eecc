#!/usr/bin/env bash
# One prepared check of landscape on a GPU (issue 26): at most 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh          # on a machine with CUDA, from anywhere
#   bash benchmarks/gpu_check.sh --cpu    # the same script on the CPU, small sizes, ~1 minute
#
# Prints one table (benchmarks/gpu_check.py says what it measures) and, when $OUT is set,
# writes it to $OUT/gpu_check.txt and $OUT/gpu_check.json. Exit status 1 if a check failed.
#
# It installs nothing beyond what `make test` installs. The Python it runs, first found:
#   1. $LANDSCAPE_PYTHON, if set;
#   2. .venv/bin/python of the repository (what `make test` creates);
#   3. python3, if it already holds everything landscape imports (torch, h5py, typer, rich,
#      scipy, scikit-learn, matplotlib, safetensors, numpy): a machine's preinstalled PyTorch,
#      such as a GPU image without network access; the repository goes on PYTHONPATH;
#   4. otherwise `make .venv/.installed` creates .venv (needs the package index) and uses it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

needs='import torch, h5py, typer, rich, scipy, sklearn, matplotlib, safetensors, numpy'
if [[ -n "${LANDSCAPE_PYTHON:-}" ]]; then
    py="$LANDSCAPE_PYTHON"
    how="LANDSCAPE_PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py="$root/.venv/bin/python"
    how=".venv (make test's)"
elif command -v python3 >/dev/null && python3 -c "$needs" 2>/dev/null; then
    py="$(command -v python3)"
    how="python3 with its own packages (nothing installed)"
else
    make .venv/.installed
    py="$root/.venv/bin/python"
    how=".venv (made now by make .venv/.installed)"
fi

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
echo "gpu_check: $py ($how)"
exec "$py" "$root/benchmarks/gpu_check.py" --python "$py" "$@"
