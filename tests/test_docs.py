"""The documentation against the code: the results-file reference (docs/results-file.md) lists
exactly the names the commands write (both ways), the Python examples of the README and of
docs/python-api.md run as doctests, every relative link of the README and docs/ resolves, and the
README stays short."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cases import runner

from landscape_cli.checkpoints import save_checkpoint
from landscape_cli.commands import app
from landscape_cli.results import read_hessian, read_scan
from landscape_cli.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS_DOC = ROOT / "docs" / "results-file.md"
PYTHON_API_DOC = ROOT / "docs" / "python-api.md"
INPUTS_DOC = ROOT / "docs" / "inputs.md"

# A name is (kind, path): kind "group", "dataset" or "attribute"; an attribute's path is
# "<owner>@<name>" ("/@schema" for the root's). Placeholders stand for names chosen at run time.
Name = tuple[str, str]
_PLACEHOLDERS = (
    (re.compile(r"^/audit/hessian(?=[/@])"), "/hessian"),  # laid out as /hessian
    (re.compile(r"^/scan/[^/@]+"), "/scan/<name>"),
    (re.compile(r"/(eigenvectors|per_layer|directions/x|directions/y)/[^/@]+"), r"/\1/<param>"),
)


def doc_section(path: Path, title: str) -> str:
    """The text of section ``## title`` of the markdown file ``path`` (up to the next ``## ``)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{path.name} has no section '## {title}'"
    return match.group(1)


def _join(base: str, name: str) -> str:
    return "/" + name if base == "/" else f"{base}/{name}"


def documented_names(section: str) -> set[Name]:
    """The names the tables of docs/results-file.md document.

    Each ``## `PATH``` heading starts the table of the object PATH (itself a documented group,
    except the root ``/``); each row's first cell holds one or more backticked names relative to
    PATH, its second cell the kind: ``attribute``, ``attribute of `MEMBER``` (an attribute of
    PATH/MEMBER), ``dataset`` or ``group``.
    """
    names: set[Name] = set()
    base = None
    for line in section.splitlines():
        heading = re.fullmatch(r"## `([^`]+)`\s*", line)
        if heading:
            base = heading.group(1)
            if base != "/":
                names.add(("group", base))
            continue
        if base is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        kind = cells[1]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if kind in ("group", "dataset"):
                names.add((kind, _join(base, name)))
                continue
            owner = re.fullmatch(r"attribute(?: of `([^`]+)`)?", kind)
            assert owner, f"results-file.md table: unknown kind {kind!r} in row {line!r}"
            path = _join(base, owner.group(1)) if owner.group(1) else base
            names.add(("attribute", f"{path}@{name}"))
    return names


def _generic(path: str) -> str:
    for pattern, replacement in _PLACEHOLDERS:
        path = pattern.sub(replacement, path)
    return path


def names_in_file(path: Path) -> set[Name]:
    """Every group, dataset and attribute of a results file, with run-time names replaced by
    the documentation's placeholders (``<name>``, ``<param>``; ``/audit/hessian/...`` as
    ``/hessian/...``)."""
    names: set[Name] = set()
    with h5py.File(path, "r") as f:
        names |= {("attribute", f"/@{key}") for key in f.attrs}

        def visit(name: str, obj) -> None:
            kind = "dataset" if isinstance(obj, h5py.Dataset) else "group"
            names.add((kind, _generic("/" + name)))
            names.update(("attribute", _generic(f"/{name}@{key}")) for key in obj.attrs)

        f.visititems(visit)
    return names


def _heading_and_row(name: Name, headings: list[str]) -> str:
    """Where a missing name goes in docs/results-file.md, and the start of its table row."""
    kind, path = name
    owner, _, attr = path.partition("@") if kind == "attribute" else (path, "", "")
    owner = owner or "/"
    heading = max(
        (h for h in headings if h == "/" or owner == h or owner.startswith(h + "/")), key=len
    )
    rel = (owner if heading == "/" else owner[len(heading) :]).lstrip("/")
    if kind == "attribute":
        where = f"attribute of `{rel}`" if rel else "attribute"
        return f"under ## `{heading}`: | `{attr}` | {where} | ... |"
    if heading == "/" or rel:
        return f"under ## `{heading}`: | `{rel}` | {kind} | ... |"
    return f"a ## `{heading}` heading"


def drift_report(documented: set[Name], written: set[Name], section: str) -> str:
    """The failure message: which names docs/results-file.md lacks and which it invents."""
    headings = re.findall(r"^## `([^`]+)`", section, re.M)
    lines = []
    missing, extra = sorted(written - documented), sorted(documented - written)
    if missing:
        lines.append(
            f"written by the commands but missing from docs/results-file.md ({len(missing)}):"
        )
        lines += [f"  {k} {p}   -> add {_heading_and_row((k, p), headings)}" for k, p in missing]
    if extra:
        lines.append(f"documented in docs/results-file.md but in no results file ({len(extra)}):")
        lines += [f"  {k} {p}" for k, p in extra]
    return "\n".join(lines)


# -- real results files ------------------------------------------------------------------------


def _ok(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def results_files(tmp_path_factory) -> dict[str, Path]:
    """Results files holding every part the commands write: a Hessian with eigenvectors,
    density and per-layer blocks; 1-D, 2-D, eigenvector, BatchNorm interpolation and trajectory
    (pca) scans; audits
    with --match-loss (on other samples than /hessian's, so /audit/hessian is written); an
    interrupted (partial) Hessian."""
    import landscape_cli.hessian as hs

    folder = tmp_path_factory.mktemp("docs")
    a, b = folder / "a.pt", folder / "b.pt"
    # a BatchNorm CNN (so interpolations record `bn`) and a perturbed copy of it
    train(TrainConfig(model="cnn", model_options={"width": 4}, epochs=1, lr=1e-2), out=a)
    raw = torch.load(a, weights_only=True)
    gen = torch.Generator().manual_seed(0)
    noisy = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen) if k.endswith("weight") else v
        for k, v in raw["state_dict"].items()
    }
    save_checkpoint(b, {**raw, "state_dict": noisy})
    fast = ["--samples", "64", "--batch-size", "32"]
    hess = [*fast, "--top-k", "2", "--trace-probes", "10", "--density-probes", "2"]
    hess += ["--lanczos-steps", "8"]
    _ok(["hessian", str(a), *hess, "--per-layer", "--eigenvectors", "--sample-sets", "2"])
    _ok(["scan", str(a), *fast, "--points", "3"])
    _ok(["scan", str(a), *fast, "--dim", "2", "--points", "3", "--ypoints", "5", "--orthogonalize"])
    _ok(["scan", str(a), *fast, "--direction", "eigenvector", "--points", "3",
         "--params", "*.weight", "--include-frozen"])  # fmt: skip
    _ok(["scan", str(a), *fast, "--to", str(b), "--points", "3"])
    c = folder / "c.pt"  # another perturbed copy: with b, the snapshots of a trajectory scan
    other = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen) if k.endswith("weight") else v
        for k, v in raw["state_dict"].items()
    }
    save_checkpoint(c, {**raw, "state_dict": other})
    _ok(["scan", str(a), *fast, "--direction", "pca", "--trajectory", str(b), "--trajectory",
         str(c), "--points", "3"])  # fmt: skip
    audit = ["--samples", "48", "--batch-size", "48", "--top-k", "1", "--trace-probes", "4"]
    audit += ["--density-probes", "2", "--lanczos-steps", "6", "--match-loss", "--sample-sets", "2"]
    _ok(["audit", str(a), str(b), *audit])

    # a Lightning-style file measured by PyHessian: state_dict_prefix and engine
    lightning = folder / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in raw["state_dict"].items()}}, lightning)
    model = ["--model", "cnn", "--model-option", "width=4", "--dataset", "digits"]
    _ok(["hessian", str(lightning), *model, *fast, "--engine", "pyhessian", "--top-k", "1",
         "--trace-probes", "0", "--density-probes", "0"])  # fmt: skip

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    partial = folder / "partial.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hs, "slq_density", interrupted)
        result = runner.invoke(app, ["hessian", str(a), *hess, "--out", str(partial)])
    assert result.exit_code == 130 and read_hessian(partial)["attrs"]["partial"]
    return {
        "a": folder / "a.h5",
        "b": folder / "b.h5",
        "partial": partial,
        "lightning": folder / "lightning.h5",
    }


@pytest.mark.slow
def test_results_file_doc_documents_exactly_the_names_in_results_files(results_files):
    section = RESULTS_DOC.read_text(encoding="utf-8")
    documented = documented_names(section)
    written = set().union(*(names_in_file(p) for p in results_files.values()))
    assert documented == written, drift_report(documented, written, section)


@pytest.mark.slow
def test_what_the_reference_says_of_scans_holds(results_files):
    """`loss` is indexed [y, x], and the centre of a scan is the checkpoint itself."""
    scan = read_scan(results_files["a"], "2d-random")
    assert scan["loss"].shape == (len(scan["y"]), len(scan["x"])) == (5, 3)
    i, j = int(np.flatnonzero(scan["x"] == 0)[0]), int(np.flatnonzero(scan["y"] == 0)[0])
    loss_at_checkpoint = read_hessian(results_files["a"])["attrs"]["loss_value"]
    assert scan["loss"][j, i] == pytest.approx(loss_at_checkpoint, rel=1e-5)


def test_the_drift_check_names_what_is_missing_and_what_is_invented():
    section = """
## `/`

| name | kind | type | meaning |
|---|---|---|---|
| `schema` | attribute | str | x \\| y |
| `scan` | group | | |

## `/hessian`

| name | kind | type | meaning |
|---|---|---|---|
| `trace` | dataset | float | |
| `stderr`, `probes` | attribute of `trace` | float | |
| `per_layer/<param>` | group | | |
| `old_name` | attribute | int | |
"""
    documented = documented_names(section)
    assert ("attribute", "/@schema") in documented
    assert ("attribute", "/hessian/trace@probes") in documented
    assert ("group", "/hessian") in documented and ("group", "/scan") in documented
    written = documented - {("attribute", "/hessian@old_name")} | {
        ("attribute", "/hessian@engine"),
        ("attribute", "/hessian/trace@note"),
        ("attribute", "/@state_dict_prefix"),
    }
    message = drift_report(documented, written, section)
    assert "attribute /hessian@engine   -> add under ## `/hessian`: | `engine` | attribute |" in (
        message
    )
    assert "| `note` | attribute of `trace` |" in message
    assert "under ## `/`: | `state_dict_prefix` | attribute |" in message
    assert "in no results file (1):\n  attribute /hessian@old_name" in message


# -- the Python API examples -------------------------------------------------------------------


def python_examples(text: str) -> str:
    """``text`` with every line outside its ```python blocks blanked (so each block ends its last
    example, and doctest's line numbers stay those of ``text``)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line == "```python"
            out.append("")
        else:
            out.append(line if inside else "")
    return "\n".join(out)


def run_examples(path: Path) -> doctest.TestResults:
    """Run the ``>>>`` examples of the ```python blocks of ``path`` as one doctest session."""
    text = python_examples(path.read_text(encoding="utf-8"))
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, path.name, str(path), 0)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner_ = doctest.DocTestRunner(optionflags=flags)
    out: list[str] = []
    result = runner_.run(test, out=out.append, clear_globs=True)
    assert result.failed == 0, "".join(out)
    return result


@pytest.mark.slow
def test_python_api_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write toy.h5 and figures
    assert run_examples(PYTHON_API_DOC).attempted > 20
    assert (tmp_path / "toy.h5").exists() and (tmp_path / "fig5.png").stat().st_size > 10_000
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".lock", ".tmp"))]


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_examples(README).attempted >= 5


# -- what docs/inputs.md's ## Data section says ----------------------------------------------


def _image(path: Path, mode: str, color, size=(4, 4)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folders_are_rgb_normalised_with_imagenet_statistics(tmp_path):
    from landscape_cli.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset

    _image(tmp_path / "a" / "gray.png", "L", 200)
    _image(tmp_path / "b" / "rgb.png", "RGB", (0, 128, 255))
    loaded = load_dataset(f"imagefolder:{tmp_path}", "test")
    assert loaded.input_shape == (3, 4, 4) and loaded.num_classes == 2
    gray, label = loaded.dataset[0]
    assert label == 0  # class folders in sorted order
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(gray * std + mean, torch.full((3, 4, 4), 200 / 255), atol=1e-6)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert f"mean ({', '.join(map(str, IMAGENET_MEAN))})" in doc_section(INPUTS_DOC, "Data")


def test_model_option_num_classes_sets_the_head_width(tmp_path):
    """A 10-way head measured on a 3-class image folder, given --model-option num_classes=10."""
    from landscape_cli.models import build_model

    for i, name in enumerate(("x", "y", "z")):
        for j in range(4):
            _image(tmp_path / "data" / name / f"{j}.png", "RGB", (60 * i + j, 20 * j, 90))
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(3, 4, 4), num_classes=10, hidden=[5])
    torch.save(net.state_dict(), tmp_path / "ten.pt")
    args = ["hessian", str(tmp_path / "ten.pt"), "--model", "mlp", "--model-option", "hidden=[5]"]
    args += ["--dataset", f"imagefolder:{tmp_path / 'data'}", "--model-option", "num_classes=10"]
    args += ["--top-k", "1", "--trace-probes", "0", "--density-probes", "0", "--json"]
    _ok(args)
    stored = read_hessian(tmp_path / "ten.h5")
    assert stored["attrs"]["num_params"] == sum(p.numel() for p in net.parameters())
    assert stored["attrs"]["samples"] == 12


# -- links, the README's size, and no pointer to a file users do not have ----------------------

DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose_lines(text: str) -> list[str]:
    """The lines of a markdown text outside its fenced code blocks (those blanked)."""
    lines, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            lines.append("")
        else:
            lines.append("" if fence else line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as ``-`` (markup such as backticks is punctuation; a link counts as its text)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a markdown file (a repeated heading gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file, or whose ``#anchor`` in a .md file, is missing."""
    broken = []
    for number, line in enumerate(_prose_lines(path.read_text(encoding="utf-8")), 1):
        for target in _LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            where = f"{path.name}:{number}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


def test_github_slugs_of_the_headings_we_link_to():
    assert github_slug("`landscape plot FILE... --figure NAME`") == (
        "landscape-plot-file---figure-name"
    )
    assert github_slug("Exact float32 on GPUs (TF32)") == "exact-float32-on-gpus-tf32"
    assert github_slug("`/scan/<name>`") == "scanname"
    assert github_slug("Testing the paper's claim fairly") == "testing-the-papers-claim-fairly"


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n## Two words\n\n## Two words\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#two-words) [ok](a.md#two-words-1) [ok](#b) [web](https://x.org/y.md#z)\n"
        "[bad](a.md#three) [bad](c.md) [bad](#nowhere)\n\n# B\n\n```\n[code](skipped.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "b.md:2: a.md#three (no heading with that anchor)",
        "b.md:2: c.md (no such file)",
        "b.md:2: #nowhere (no heading with that anchor)",
    ]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 300, f"README.md has {lines} lines; move details into docs/"


def test_no_file_points_to_the_internal_design_file():
    needle = "DESIGN" + ".md"  # not spelled out, so that this file does not match itself
    skip_dirs = {".git", ".venv", "__pycache__", ".ruff_cache", ".pytest_cache", "node_modules"}
    binary = {".pt", ".pth", ".ckpt", ".h5", ".png", ".pdf", ".safetensors", ".pyc", ".journal"}
    offenders = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip_dirs and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in binary or name == ".git" or path.stat().st_size > 2_000_000:
                continue
            if needle in path.read_text(encoding="utf-8", errors="replace"):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], f"these files mention {needle}, which users do not have: {offenders}"
