"""Optional dependencies (issue 24, part 2): transformers, datasets and pandas come with
``landscape[hf]``, timm with ``landscape[timm]``. A run that needs a missing one is one error line
naming the extra; a run that does not (a digits CNN) never imports them, nor scikit-learn, scipy
or matplotlib. Each case runs the command in a fresh process whose imports of the "missing"
packages fail, as on a machine without them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lm_cases import make_bert, write_csv

from landscape_cli.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

#: Runs the CLI with the packages named in argv[1] made unimportable (as if not installed) and,
#: at exit, writes the optional or heavy packages that were imported into argv[2].
RUNNER = textwrap.dedent(
    """
    import atexit, json, sys
    blocked = set(filter(None, sys.argv[1].split(",")))
    watch = ("transformers", "timm", "datasets", "pandas", "sklearn", "scipy", "matplotlib")

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    report = sys.argv[2]

    @atexit.register
    def _imported():
        tops = {m.split(".")[0] for m in sys.modules}
        with open(report, "w") as fh:
            json.dump(sorted(tops & set(watch)), fh)

    sys.argv = ["landscape", *sys.argv[3:]]
    from landscape_cli.commands import main
    main()
    """
)


def _run(blocked: list[str], args: list[str], tmp_path: Path):
    report = tmp_path / "imported.json"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(blocked), str(report), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    imported = json.loads(report.read_text()) if report.exists() else None
    return done, imported


def _one_line_naming(done, extra: str) -> str:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert f"pip install 'landscape[{extra}]'" in done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("extras")
    make_bert(d / "ft")
    write_csv(d / "data.csv")
    return d


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    ckpt = tmp_path_factory.mktemp("extras-cnn") / "cnn.pt"
    train(TrainConfig(model="cnn", dataset="digits", epochs=1, seed=0), out=ckpt)
    return ckpt


@pytest.mark.parametrize(
    ("blocked", "what"),
    [
        (["transformers"], "the Hugging Face folder"),
        (["pandas"], "text:"),
    ],
)
def test_hugging_face_folder_or_text_data_without_the_hf_extra(hf_folder, tmp_path, blocked, what):
    args = ["hessian", hf_folder / "ft", "--dataset", f"text:{hf_folder / 'data.csv'}",
            "--top-k", "1", "--trace-probes", "0", "--density-probes", "0",
            "--out", tmp_path / "x.h5"]  # fmt: skip
    line = _one_line_naming(_run(blocked, args, tmp_path)[0], "hf")
    assert what in line and f"package {blocked[0]}" in line
    assert not (tmp_path / "x.h5").exists()


def test_saved_dataset_folder_without_datasets(hf_folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(
        {"text": ["a good film", "a bad film"], "label": [1, 0]}
    ).save_to_disk(str(saved))
    args = ["scan", hf_folder / "ft", "--dataset", f"text:{saved}", "--points", "3",
            "--out", tmp_path / "x.h5"]  # fmt: skip
    line = _one_line_naming(_run(["datasets"], args, tmp_path)[0], "hf")
    assert "package datasets" in line


@pytest.mark.parametrize("command", ["hessian", "train"])
def test_timm_model_without_the_timm_extra(cnn, tmp_path, command):
    state = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(10, 8)}, state)
    if command == "train":
        args = ["train", "--model", "timm:resnet18", "--dataset", "digits", "--epochs", "1",
                "--out", tmp_path / "t.pt"]  # fmt: skip
    else:
        args = ["hessian", state, "--model", "timm:resnet18", "--dataset", "digits",
                "--out", tmp_path / "t.h5"]  # fmt: skip
    line = _one_line_naming(_run(["timm"], args, tmp_path)[0], "timm")
    assert "timm:resnet18" in line and "package timm" in line


def test_a_digits_cnn_needs_no_optional_package_and_imports_no_heavy_one(cnn, tmp_path):
    """With every optional package missing, the digits CNN is measured, and the run imports
    none of them, nor scikit-learn, scipy or matplotlib (issue 24: start-up time)."""
    args = ["hessian", cnn, "--top-k", "1", "--trace-probes", "0", "--density-probes", "0",
            "--out", tmp_path / "h.h5", "--json"]  # fmt: skip
    done, imported = _run(["transformers", "timm", "datasets", "pandas"], args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["eigenvalues"]
    assert imported == []
    # the check can fail: a run with a trace imports scipy (its Student-t interval)
    args = [*args[:4], "--trace-probes", "2", *args[6:]]
    done, imported = _run([], [*args, "--overwrite"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert imported == ["scipy"]


def test_digits_are_read_without_scikit_learn_and_equal_its_loader():
    from sklearn.datasets import load_digits

    from landscape_cli.data import digits

    images, targets = digits._load()
    reference = load_digits()
    assert images.dtype == reference.images.dtype and targets.dtype.kind == "i"
    assert (images == reference.images).all() and (targets == reference.target).all()
