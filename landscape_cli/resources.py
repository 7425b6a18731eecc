"""Memory guards: estimate what a job's option-sized buffers need before allocating them.

Buffers that grow with the options (the Lanczos basis with ``--max-steps``, the SLQ probes and
bases with ``--density-probes``/``--lanczos-steps``, Hutch++ sketches with ``--trace-probes``,
scan grids and their folds with ``--points``) are estimated first; past the memory available on
the device, :func:`require` raises one line saying how much is needed and which option to lower,
instead of letting the allocator fail with a traceback or the machine swap for hours.

The estimates are upper bounds of the dominant terms (float64 vectors of the n parameters), not
exact accounting; the model, its graphs and the data are not included.

Before any of that, :func:`check_options` holds every option to its real domain: each count to
an integer range whose top is far beyond any useful run (so that no loop or list it sizes can
grow unbounded: ``trace_probes=1e11`` is refused in one line instead of building a list of 10¹⁰
block sizes), each seed to what every random generator takes (0 to 2⁶³ − 1), each tolerance and
radius to a finite positive number. :data:`DOMAINS` is that one table, by the library's parameter
names; :func:`model_bytes` and :func:`image_pixels` guard the model a checkpoint declares (counted
on the ``meta`` device before it is built) and the canvas of a figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from landscape_cli.errors import LandscapeError

__all__ = [
    "DOMAINS",
    "Domain",
    "available_bytes",
    "check_options",
    "hessian_bytes",
    "human",
    "image_pixels",
    "model_bytes",
    "require",
    "scan_bytes",
]

_F64 = 8


def human(nbytes: float) -> str:
    """``nbytes`` as a short human-readable size (1024-based)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


def available_bytes(device: object = "cpu") -> int | None:
    """Memory free for new buffers on ``device`` (None when it cannot be told).

    CPU: ``MemAvailable`` of /proc/meminfo (else physical pages). CUDA: free device memory.
    ``LANDSCAPE_MEMORY_LIMIT`` (bytes) caps either, e.g. to keep headroom on a shared machine.
    """
    found: int | None = None
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        # lazy: resources imports no torch (the commands import it)
        import torch

        try:
            found = int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # pragma: no cover - no CUDA, or a driver that cannot tell
            found = None
    else:
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        found = int(line.split()[1]) * 1024
                        break
        except OSError:
            found = None
        if found is None:
            try:
                found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):  # pragma: no cover
                found = None
    limit = os.environ.get("LANDSCAPE_MEMORY_LIMIT")
    if limit:
        try:
            cap = int(float(limit))
        except ValueError:
            raise LandscapeError(
                f"LANDSCAPE_MEMORY_LIMIT must be a number of bytes, got {limit!r}"
            ) from None
        found = cap if found is None else min(found, cap)
    return found


def require(needs: dict[str, tuple[int, str]], device: object = "cpu") -> None:
    """Refuse when the buffers in ``needs`` ({what: (bytes, option to lower)}) do not fit.

    The largest buffer and its option are named in the one-line error.
    """
    total = sum(b for b, _ in needs.values())
    free = available_bytes(device)
    if free is None or total <= free:
        return
    what, (nbytes, option) = max(needs.items(), key=lambda item: item[1][0])
    raise LandscapeError(
        f"this needs about {human(total)} of memory ({what}: {human(nbytes)}) but "
        f"{human(free)} is available on {device}; lower {option}"
    )


def hessian_bytes(
    settings, n: int, products_float64: bool = False, device: object = None
) -> dict[str, tuple[int, str]]:
    """The option-sized buffers of ``landscape hessian`` on a model of ``n`` parameters.

    ``products_float64``: the model computes in float64, so the basis stays float64.
    ``device``: where the basis lives; on the CPU it is reserved once and only its stored
    rows take memory, elsewhere (or unknown) it grows by copies.
    """
    # lazy: resources imports no torch (the commands import it)
    import torch

    # lazy: upward import (hessian/ sits above resources)
    from landscape_cli.hessian.batching import ROUND, default_block
    from landscape_cli.hessian.lanczos import basis_dtype_for

    s = settings
    needs: dict[str, tuple[int, str]] = {}
    if s.top_k > 0 or s.trace_method == "deflated":
        steps = min(s.max_steps, n)
        products = torch.float64 if products_float64 else torch.float32
        item = basis_dtype_for(n, s.max_steps, products).itemsize
        # On the CPU the basis is reserved once, resident as rows are stored (max_steps + 1,
        # and a block's growth); elsewhere it grows by half its size: while growing, the old
        # rows and the new basis are both held, at most 5/3 of the final max_steps + 1 rows.
        on_cpu = device is not None and str(device).startswith("cpu")
        # a block grows only for k > 1 from a block wider than 1 (lanczos_run)
        grows = s.top_k > 1 and s.block_size != 1
        rows = steps + 1 + (8 if grows else 0) if on_cpu else (steps + 1) * 5 // 3 + 1
        # the working rows (block, residual, products, Ritz vectors) are in the basis's dtype
        basis = rows * n * item + 3 * (max(s.top_k, 1) + 1) * n * item
        needs["Lanczos basis"] = (basis, "`max_steps` (or `top_k`)")
    if s.trace_probes > 0:
        # probes go 8 at a time (fewer when fewer are asked for, or when n is large:
        # batching.default_block); Hutch++ sketches at once
        most = default_block(device, n)
        block = (
            max(s.trace_probes, most) if s.trace_method == "hutch++" else min(most, s.trace_probes)
        )
        # the probe vectors of one product, a round of 8 probes (deflated: the probes and their
        # projections in float64; plain Hutchinson: signs, one byte each), and each probe's
        # sample kept (a float and its list entry)
        deflated = s.trace_method == "deflated" or (s.trace_method == "auto" and s.top_k > 0)
        round_bytes = 2 * ROUND * n * _F64 if deflated else ROUND * n
        needs["trace probes"] = (
            4 * block * n * _F64 + round_bytes + 64 * s.trace_probes,
            "`trace_probes`",
        )
    if s.density_probes > 0:
        steps = max(1, min(s.lanczos_steps, n))
        vectors = 6 * s.density_probes * n * _F64
        basis = s.density_probes * steps * n * _F64
        nodes = 4 * s.density_probes * steps * _F64  # Ritz values and weights, kept and copied
        needs["SLQ probes"] = (
            vectors + nodes + (basis if basis <= 1024**3 else 0),
            "`density_probes`",
        )
    if getattr(s, "per_layer", False):
        # one Lanczos basis per block (at most `per_layer_steps` rows each: <= steps * n in
        # all) and the shared probes with their products, all at once
        basis = min(s.per_layer_steps, n) * n * _F64
        probes = 2 * s.per_layer_probes * n * _F64
        needs["per-layer blocks"] = (basis + probes, "`per_layer_probes` (or `per_layer_steps`)")
    return needs


#: Bytes per scan point: the coordinates, the loss and accuracy grids (float64) as created,
#: read back and copied by the scan, the index of the points still to do, and the two grids that
#: a fold (read, update, rewrite of the results file) holds at once.
SCAN_BYTES_PER_POINT = 96


def scan_bytes(points: int) -> dict[str, tuple[int, str]]:
    """The grids of a scan of ``points`` points (see :data:`SCAN_BYTES_PER_POINT`)."""
    return {"scan grid": (int(points) * SCAN_BYTES_PER_POINT, "`points` (or `ypoints`)")}


# --------------------------------------------------------------------------------------------------
# option domains


@dataclass(frozen=True)
class Domain:
    """The values one option may take: an integer or a finite real number in ``[low, high]``.

    ``low_open``/``high_open`` exclude that end (``tol`` is > 0). A bool is never a number here.
    """

    integer: bool
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is in the domain."""
        if isinstance(value, bool):
            return False
        if self.integer:
            if not isinstance(value, int):
                return False
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self) -> str:
        """The domain in words, as the error line says it."""
        if self.integer:
            return f"an integer from {self.low} to {self.high}"
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        if math.isinf(self.high):
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        return f"a finite number in {lo}{self.low:g}, {self.high:g}{hi}"


def _count(low: int, high: int) -> Domain:
    return Domain(True, low, high)


def _real(low: float, high: float = math.inf, *, low_open=False, high_open=False) -> Domain:
    return Domain(False, low, high, low_open, high_open)


#: Largest seed: what every generator takes (torch's take 0 to 2**64 - 1, where a negative seed
#: would only be another name for one of these) and what the derived streams keep in range.
MAX_SEED = 2**63 - 1

#: Every option's domain, by the library's parameter name (the same name in every command). The
#: top of each count is far beyond any useful run: a million Lanczos steps or probes is days of
#: Hessian-vector products on the smallest model. Options not named here are checked by the job
#: that takes them (names, choices, relations between options).
DOMAINS: dict[str, Domain] = {
    # random streams
    "seed": _count(0, MAX_SEED),
    # hessian and audit
    "top_k": _count(0, 100_000),
    "max_steps": _count(1, 1_000_000),
    "block_size": _count(0, 100_000),
    "trace_probes": _count(0, 1_000_000),
    "density_probes": _count(0, 100_000),
    "lanczos_steps": _count(1, 100_000),
    "per_layer_steps": _count(1, 100_000),
    "per_layer_probes": _count(1, 100_000),
    "sample_sets": _count(1, 10_000),
    "directions": _count(1, 100_000),
    "ascent_steps": _count(0, 100_000),
    "restarts": _count(1, 10_000),
    "tol": _real(0, low_open=True),
    "trace_rtol": _real(0),
    "density_tol": _real(0),
    "density_sigma": _real(0, low_open=True),
    "epsilon": _real(0, low_open=True),
    "rho": _real(0, low_open=True),
    "tau": _real(0, 1, high_open=True),
    # samples (0: all of the split)
    "samples": _count(0, 2**48),
    "batch_size": _count(1, 2**31 - 1),
    # scan
    "points": _count(1, 1_000_000),
    "ypoints": _count(1, 1_000_000),
    "xrange": _real(-math.inf),
    "yrange": _real(-math.inf),
    "fold_every": _real(0, low_open=True),
    # train
    "epochs": _count(1, 1_000_000),
    "warmup_steps": _count(0, 2**62),
    "save_every": _count(0, 1_000_000),
    "lr": _real(0, low_open=True),
    "weight_decay": _real(0),
    "switch_rate": _real(0),
    "momentum": _real(0, 1, high_open=True),
    # figures
    "levels": _count(2, 10_000),
    "dpi": _count(1, 10_000),
    "size": _real(0, 1_000, low_open=True),
    "vmin": _real(-math.inf),
    "vmax": _real(-math.inf),
    # processes
    "threads": _count(1, 4_096),
}


def check_options(values: Mapping[str, Any]) -> None:
    """Refuse the first of ``values`` that is outside its :data:`DOMAINS` entry, in one line.

    Names without an entry, and None values (an option left at "default"), are skipped; a tuple
    or list (a range, a size) must hold values of the domain. The message names the library
    parameter in backticks (`` `trace_probes` must be an integer from 0 to 1000000, got
    100000000000 ``), which the command layer shows as its flag.
    """
    for name, value in values.items():
        domain = DOMAINS.get(name)
        if domain is None or value is None:
            continue
        items = list(value) if isinstance(value, (tuple, list)) else [value]
        if items and all(domain.holds(v) for v in items):
            continue
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        each = "each value " if isinstance(value, (tuple, list)) else ""
        raise LandscapeError(f"`{name}` {each}must be {domain.text()}, got {shown}")


def check_fields(obj: Any) -> None:
    """:func:`check_options` of the fields of a dataclass instance (settings, options)."""
    check_options({f.name: getattr(obj, f.name) for f in fields(obj)})


# --------------------------------------------------------------------------------------------------
# models and figures


def model_bytes(model: Any, *, training: bool = False) -> int:
    """Bytes of ``model``'s parameters and buffers (a ``meta``-device model costs nothing to ask).

    With ``training``, also its gradients and two optimizer buffers per parameter (Adam's).
    """
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params * (4 if training else 1) + buffers


def require_model(model: Any, device: object = "cpu", *, training: bool = False) -> None:
    """Refuse a model (built on the ``meta`` device) whose weights do not fit ``device``."""
    what = "model weights, gradients and optimizer state" if training else "model weights"
    require({what: (model_bytes(model, training=training), "`model_options`")}, device)


#: The most pixels along one side of a figure's canvas (Agg's own limit is 2**16).
MAX_SIDE_PIXELS = 2**16 - 1
#: The most pixels of a figure's canvas: 400 megapixels, 1.6 GB of RGBA.
MAX_PIXELS = 400_000_000


def image_pixels(width: float, height: float, dpi: float) -> None:
    """Refuse a ``width`` × ``height`` inch canvas at ``dpi`` that cannot be drawn, in one line.

    Each side must stay within :data:`MAX_SIDE_PIXELS` and the whole within :data:`MAX_PIXELS`
    and the memory available (4 bytes a pixel, twice: the canvas and its encoded copy).
    """
    wide, high = width * dpi, height * dpi
    if max(wide, high) > MAX_SIDE_PIXELS or wide * high > MAX_PIXELS:
        raise LandscapeError(
            f"a {width:g} × {height:g} inch figure at {dpi:g} dpi is {wide:,.0f} × {high:,.0f} "
            f"pixels; the most is {MAX_SIDE_PIXELS:,} a side and {MAX_PIXELS:,} in all: lower "
            "`dpi` or `size`"
        )
    require({"figure canvas": (int(8 * wide * high), "`dpi` (or `size`)")}, "cpu")
