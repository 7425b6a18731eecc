"""Options and output helpers shared by the measuring commands (hessian, scan, audit)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

Checkpoint = Annotated[
    Path, typer.Argument(help="Checkpoint: landscape .pt, state dict, or .safetensors.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Architecture for files without a model spec: a name, torchvision:NAME, or "
        "package.module:factory.",
    ),
]
ModelOptionOpt = Annotated[
    list[str] | None,
    typer.Option("--model-option", help="KEY=VALUE for --model (repeatable)."),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="digits, cifar10, cifar100, imagefolder:PATH, package.module:factory "
        "(default: the checkpoint's).",
    ),
]
DataRootOpt = Annotated[str | None, typer.Option("--data-root", help="Folder holding CIFAR data.")]
SplitOpt = Annotated[str, typer.Option("--split", help="train or test.")]
SamplesOpt = Annotated[
    int, typer.Option("--samples", help="The first N samples of the split (0 = all).")
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Samples per batch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-checkpoint",
        help="Allow pickled Python objects (can run arbitrary code: trusted files only).",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Results file (default: the checkpoint's path with .h5)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def results_path(checkpoint: Path, out: Path | None) -> Path:
    return out if out is not None else checkpoint.with_suffix(".h5")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_clean(obj)) + "\n")
    sys.stdout.flush()


def provenance(checkpoint: Path) -> dict[str, Any]:
    """Root attributes of a results file: what was measured, by which tools."""
    import torch

    from landscape_cli.results import sha256_file

    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "argv": " ".join(sys.argv),
        "torch_version": str(torch.__version__),
        "cuda_version": torch.version.cuda or "",
    }
