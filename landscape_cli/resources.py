"""Memory guards: estimate what a job's option-sized buffers need before allocating them.

Buffers that grow with the options (the Lanczos basis with ``--max-steps``, the SLQ probes and
bases with ``--density-probes``/``--lanczos-steps``, Hutch++ sketches with ``--trace-probes``,
scan grids and their folds with ``--points``) are estimated first; past the memory available on
the device, :func:`require` raises one line saying how much is needed and which option to lower,
instead of letting the allocator fail with a traceback or the machine swap for hours.

The estimates are upper bounds of the dominant terms (float64 vectors of the n parameters), not
exact accounting; the model, its graphs and the data are not included.
"""

from __future__ import annotations

import os

from landscape_cli.errors import LandscapeError

__all__ = [
    "available_bytes",
    "hessian_bytes",
    "human",
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


def hessian_bytes(settings, n: int, products_float64: bool = False) -> dict[str, tuple[int, str]]:
    """The option-sized buffers of ``landscape hessian`` on a model of ``n`` parameters.

    The option-sized buffers of ``landscape hessian`` on a model of ``n`` parameters
    (``products_float64``: the model computes in float64, so the basis stays float64).
    """
    import torch

    from landscape_cli.hessian.lanczos import basis_dtype_for

    s = settings
    needs: dict[str, tuple[int, str]] = {}
    if s.top_k > 0 or s.trace_method == "deflated":
        steps = min(s.max_steps, n)
        products = torch.float64 if products_float64 else torch.float32
        item = basis_dtype_for(n, s.max_steps, products).itemsize
        # The basis grows by half its size: while growing, the old rows and the new basis are
        # both held, at most 5/3 of the final max_steps + 1 rows.
        rows = (steps + 1) * 5 // 3 + 1
        basis = rows * n * item + 3 * (max(s.top_k, 1) + 1) * n * _F64
        needs["Lanczos basis"] = (basis, "`max_steps` (or `top_k`)")
    if s.trace_probes > 0:
        block = max(s.trace_probes, 8) if s.trace_method == "hutch++" else 8
        needs["trace probes"] = (4 * block * n * _F64, "`trace_probes`")
    if s.density_probes > 0:
        steps = max(1, min(s.lanczos_steps, n))
        vectors = 6 * s.density_probes * n * _F64
        basis = s.density_probes * steps * n * _F64
        needs["SLQ probes"] = (vectors + (basis if basis <= 1024**3 else 0), "`density_probes`")
    return needs


#: Bytes per scan point: the coordinates, the loss and accuracy grids (float64) as created,
#: read back and copied by the scan, the index of the points still to do, and the two grids that
#: a fold (read, update, rewrite of the results file) holds at once.
SCAN_BYTES_PER_POINT = 96


def scan_bytes(points: int) -> dict[str, tuple[int, str]]:
    """The grids of a scan of ``points`` points (see :data:`SCAN_BYTES_PER_POINT`)."""
    return {"scan grid": (int(points) * SCAN_BYTES_PER_POINT, "`points` (or `ypoints`)")}
