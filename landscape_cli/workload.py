"""What ``hessian``, ``scan`` and ``audit`` measure on: a checkpoint's model and a fixed sample set.

The options the three commands share: ``--model`` (needed for files that carry no model spec, or to
override it), ``--dataset``/``--data-root`` (default: the dataset recorded in a landscape
checkpoint), ``--split`` (train by default), ``--samples N`` (a seeded, class-stratified
subset of N samples of the split, :func:`landscape_cli.batches.select_indices`, the same
for every command given the same ``--seed``; no augmentation), ``--batch-size``, ``--device``,
``--trust-checkpoint``. The commands gather them into one :class:`Source`, the jobs pass it on, and
:func:`load_workload` reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from landscape_cli import distributed, resources
from landscape_cli.batches import Batch, class_labels, samples_sha256, select_sets
from landscape_cli.checkpoints import (
    LoadedModel,
    check_checkpoint,
    is_landscape_checkpoint,
    load_model,
    read_file,
    stored_model_spec,
)
from landscape_cli.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from landscape_cli.data.text import (
    causal_batches,
    collate,
    load_lm_text,
    load_text,
    sequences_sha256,
    text_path,
)
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.extras import require
from landscape_cli.models.hf import (
    folder_of,
    is_hf_folder,
    is_hf_spec,
    load_hf_folder,
    load_tokenizer,
)
from landscape_cli.specs import check_file_spec


@dataclass(frozen=True)
class Source:
    """How to load a checkpoint's model and samples (the shared options of the commands)."""

    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_root: str | None = None
    split: str = "train"
    samples: int = 1024
    batch_size: int = 128
    trust: bool = False
    seed: int = 0  # of the sample selection
    text_columns: tuple[str, ...] = ("text",)  # text:FILE data of Hugging Face folders
    label_column: str = "label"
    seq_len: int | None = None  # causal language models: tokens per sequence (or block)
    pack: bool = False  # causal language models: blocks of seq_len tokens, not one per text
    # told what the user should know about how a file was read (a prefix removed from its keys)
    on_note: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def note(self, loaded: Any) -> None:
        """Pass the notes of a :class:`~landscape_cli.checkpoints.LoadedModel` to ``on_note``."""
        if self.on_note is None or not distributed.is_main():
            return
        for text in getattr(loaded, "notes", ()):
            self.on_note(f"{loaded.path.name}: {text}")

    def check(self) -> None:
        """The counts and the seed against their domains (:func:`resources.check_options`)."""
        resources.check_options(
            {"samples": self.samples, "batch_size": self.batch_size, "seed": self.seed}
        )


@dataclass(frozen=True)
class SampleSet:
    """Another sample set of a workload: its batches and the SHA-256 of its samples."""

    batches: list[Batch]
    samples_sha256: str


@dataclass(frozen=True)
class Workload:
    """A model ready to evaluate, and the ordered batches of samples it is measured on."""

    loaded: LoadedModel
    batches: list[Batch]
    dataset: str
    split: str
    samples: int
    batch_size: int
    seed: int = 0
    samples_sha256: str = ""  # SHA-256 of the samples' data (:func:`batches.samples_sha256`)
    loss: str | None = None  # the loss the checkpoint was trained with, where it says
    #: further disjoint sample sets of the same size (``sample_sets`` > 1), with their hashes
    sets: tuple[SampleSet, ...] = ()

    def resolve_loss(self, loss: str | None) -> str:
        """``loss`` when given, else the checkpoint's training loss, else cross-entropy."""
        return loss or self.loss or "ce"

    @property
    def model(self) -> torch.nn.Module:
        """The loaded model."""
        return self.loaded.model


def load_workload(
    checkpoint: str | os.PathLike[str], options: Source = Source(), *, sample_sets: int = 1
) -> Workload:
    """Load ``checkpoint`` and ``options.samples`` samples of ``options.split`` of its dataset.

    The samples are chosen by :func:`~landscape_cli.batches.select_indices` with
    ``options.seed``; with ``sample_sets`` > 1, also the next ``sample_sets − 1`` disjoint sets of
    as many (``Workload.sets``, :func:`~landscape_cli.batches.select_sets`). The counts, the seed
    and the split are checked first; what the user should know about how the file was read goes
    to ``options.on_note``.

    A Hugging Face folder (``model="hf:..."``, or a folder holding a ``config.json``) loads
    through :func:`load_hf_workload`; ``text_columns``/``label_column`` name the columns of its
    ``text:FILE`` data, and ``seq_len``/``pack`` shape a causal language model's sequences.
    """
    options.check()
    check_choice("split", options.split, ("train", "test"))
    path = Path(checkpoint)

    model, dataset = options.model, options.dataset
    if is_hf_spec(model) or (model is None and is_hf_folder(path)):
        work = load_hf_workload(path, options, sample_sets=sample_sets)
    else:
        _check_lm_options(options.seq_len, options.pack, "a checkpoint file")
        if dataset is not None and dataset.strip().lower().startswith("text:"):
            raise LandscapeError(
                f"`dataset={dataset!r}` is text data, for Hugging Face model folders "
                "(`model='hf:'`)"
            )
        work = _file_workload(path, options, sample_sets)
    options.note(work.loaded)
    return work


def _file_workload(path: Path, options: Source, sample_sets: int = 1) -> Workload:
    """:func:`load_workload` for a checkpoint file (not a Hugging Face folder)."""
    trust = options.trust
    raw = read_file(path, trust=trust)
    if is_landscape_checkpoint(raw):
        # Specs stored in the file are checked before anything is imported or loaded.
        check_checkpoint(raw, path)
        if options.model is None:
            stored_model_spec(raw, path, trust=trust)
    ds_name, root = _dataset_of(raw, path, options.dataset, options.data_root, trust)
    data = load_dataset(ds_name, options.split, root=root, augment=False)
    loaded = load_model(
        path,
        model=options.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        model_options=options.model_options,
        trust=trust,
        contents=raw,
    )
    chosen = select_sets(data.dataset, options.samples, sample_sets, options.seed)

    def batched(indices) -> list[Batch]:
        subset = torch.utils.data.Subset(data.dataset, indices.tolist())
        loader = torch.utils.data.DataLoader(subset, batch_size=options.batch_size, shuffle=False)
        return [Batch(x, torch.as_tensor(y)) for x, y in loader]

    batches = batched(chosen[0])
    return Workload(
        sets=_other_sets(batched, chosen[1:]),
        loaded=loaded,
        batches=batches,
        dataset=ds_name,
        split=options.split,
        samples=sum(len(b) for b in batches),
        batch_size=options.batch_size,
        seed=options.seed,
        samples_sha256=samples_sha256(batches),
        loss=stored_loss(raw),
    )


def _other_sets(batched, others) -> tuple[SampleSet, ...]:
    """The further sample sets, each batched as the first one is."""
    out = []
    for indices in others:
        batches = batched(indices)
        out.append(SampleSet(batches, samples_sha256(batches)))
    return tuple(out)


def _dataset_of(raw: Any, path: Path, dataset: str | None, data_root: str | None, trust: bool):
    """``(dataset spec, root)``: the ones given, else the ones the checkpoint records."""
    ds_name, root = dataset, data_root
    if ds_name is None:
        stored = raw.get("dataset") if isinstance(raw, dict) else None
        if isinstance(stored, dict) and stored.get("name"):
            ds_name = check_file_spec(stored["name"], "dataset", str(path), trust=trust)
            stored_root = stored.get("root")
            if stored_root is not None and not isinstance(stored_root, str):
                raise LandscapeError(f"{path} records a dataset root that is not a string")
            root = root if root is not None else stored_root
        else:
            raise LandscapeError(
                f"{path} does not record its dataset; pass `dataset` (digits, cifar10, cifar100, "
                "imagefolder:PATH or package.module:factory)"
            )
    return ds_name, root


def stored_loss(raw: Any) -> str | None:
    """The training loss a landscape checkpoint records (``loss``), None when it does not."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("loss")
    if value is None and isinstance(raw.get("train"), dict):
        config = raw["train"].get("config")
        value = config.get("loss") if isinstance(config, dict) else None
    return value if value in ("ce", "mse") else None


def load_hf_workload(folder: Path, options: Source, *, sample_sets: int = 1) -> Workload:
    """A Hugging Face folder (:mod:`landscape_cli.models.hf`) and its samples.

    Text classifiers take ``text:FILE`` (:mod:`landscape_cli.data.text`): batches are dicts of
    padded token ids and attention masks. Image classifiers take any image dataset
    (``imagefolder:PATH``), whose images must have the config's ``image_size``; the pixels are
    normalised with the folder's ``preprocessor_config.json`` mean and std where it has them,
    and folder class names map to ids through the config's ``label2id``. Causal language models
    take ``text:FILE`` too (:func:`_lm_workload`).
    """
    folder = folder_of(options.model, folder)
    dataset, split, samples = options.dataset, options.split, options.samples
    batch_size, seed = options.batch_size, options.seed
    if dataset is None:
        raise LandscapeError(
            f"{folder} does not record its dataset; pass `dataset` (text:FILE for a text "
            "classifier, imagefolder:PATH for an image classifier)"
        )
    is_text = dataset.strip().lower().startswith("text:")
    _require_extras(folder, dataset, is_text)
    hf = load_hf_folder(folder, trust=options.trust)
    _check_task(hf, folder, is_text)
    if hf.task == "causal-lm":
        return _lm_workload(hf, options, sample_sets)
    _check_lm_options(
        options.seq_len, options.pack, f"{folder} ({hf.architecture}, not a language model)"
    )
    if hf.task == "text":
        data, collate = _text_data(hf, dataset, split, options.text_columns, options.label_column)
    else:
        data, collate = _image_data(hf, dataset, split, options.data_root), None
    chosen = select_sets(data, samples, sample_sets, seed)
    batches = _batches(data, chosen[0], batch_size, collate)
    spec = {"name": f"hf:{folder}", "kwargs": {"architecture": hf.architecture}}
    loaded = LoadedModel(hf.model, spec, None, folder, "hf")
    return Workload(
        loaded=loaded,
        batches=batches,
        dataset=dataset.strip(),
        split=split,
        samples=sum(len(b) for b in batches),
        batch_size=batch_size,
        seed=seed,
        samples_sha256=samples_sha256(batches),
        loss="mse" if hf.num_labels == 1 else "ce",
        sets=_other_sets(lambda idx: _batches(data, idx, batch_size, collate), chosen[1:]),
    )


def _check_lm_options(seq_len: int | None, pack: bool, what: str) -> None:
    """Refuse ``seq_len`` and ``pack`` for a model that is not a causal language model."""
    if seq_len is not None or pack:
        name = "`seq_len`" if seq_len is not None else "`pack=True`"
        raise LandscapeError(
            f"{name} applies to causal language models (Hugging Face folders); {what} is not one"
        )


#: ``seq_len`` when none is given (at most the model's positions).
DEFAULT_SEQ_LEN = 128


def _lm_workload(hf, options: Source, sample_sets: int = 1) -> Workload:
    """A causal language model and its token sequences (:mod:`landscape_cli.token_loss`).

    The sequences of :func:`landscape_cli.data.text.load_lm_text`, ``samples`` of them (blocks
    with ``pack``) chosen by :func:`~landscape_cli.batches.select_sets` (seeded, uniform;
    the first set, the others in ``sets``), in batches of
    :func:`~landscape_cli.data.text.causal_batches`. ``seq_len`` defaults to
    :data:`DEFAULT_SEQ_LEN`, or the model's positions when it has fewer; a given one must be in
    ``2..positions``. The samples' hash covers their token ids.
    """
    dataset, split, samples = options.dataset, options.split, options.samples
    batch_size, seed, text_columns = options.batch_size, options.seed, options.text_columns
    seq_len, pack = options.seq_len, options.pack
    positions = hf.model.positions()
    if seq_len is None:
        seq_len = min(DEFAULT_SEQ_LEN, positions) if positions else DEFAULT_SEQ_LEN
    elif seq_len < 2:
        raise LandscapeError(
            f"`seq_len` must be >= 2 (a token and the next one it predicts), got {seq_len}"
        )
    elif positions is not None and seq_len > positions:
        raise LandscapeError(
            f"`seq_len={seq_len}` is beyond the {positions} positions of {hf.folder} "
            f"({hf.architecture}); pass at most `seq_len={positions}`"
        )
    if len(text_columns) != 1:
        raise LandscapeError(
            f"a language model reads one text column, got {len(text_columns)} `text_columns`"
        )
    tok = load_tokenizer(hf.folder)
    data = load_lm_text(
        dataset, tok, split=split, text_column=text_columns[0], seq_len=seq_len, pack=pack
    )
    sets = select_sets(data, samples, sample_sets, seed)
    chosen = [data.sequences[i] for i in sets[0].tolist()]

    def batched(indices) -> list:
        some = [data.sequences[i] for i in indices.tolist()]
        return causal_batches(some, batch_size, tok.pad_token_id, str(text_path(dataset)))

    batches = batched(sets[0])
    spec = {"name": f"hf:{hf.folder}", "kwargs": {"architecture": hf.architecture}}
    return Workload(
        loaded=LoadedModel(hf.model, spec, None, hf.folder, "hf"),
        batches=batches,
        dataset=dataset.strip(),
        split=split,
        samples=len(chosen),
        batch_size=batch_size,
        seed=seed,
        samples_sha256=sequences_sha256(chosen),
        loss="ce",
        sets=tuple(
            SampleSet(batched(idx), sequences_sha256([data.sequences[i] for i in idx.tolist()]))
            for idx in sets[1:]
        ),
    )


def _check_task(hf, folder: Path, is_text: bool) -> None:
    """Refuse text data for an image classifier and image data for a text classifier."""
    if hf.task == "causal-lm" and not is_text:
        raise LandscapeError(
            f"{folder} is a causal language model ({hf.architecture}); pass `dataset='text:FILE'`"
        )
    if hf.task == "text" and not is_text:
        raise LandscapeError(
            f"{folder} is a text classifier ({hf.architecture}); pass `dataset='text:FILE'`"
        )
    if hf.task == "image" and is_text:
        raise LandscapeError(
            f"{folder} is an image classifier ({hf.architecture}); `dataset='text:'` is for text"
        )


def _batches(data, indices, batch_size: int, collate) -> list[Batch]:
    """The samples at ``indices``, in order, as batches (inputs through ``collate`` if given)."""
    batches = []
    for start in range(0, len(indices), batch_size):
        rows = [data[i] for i in indices[start : start + batch_size].tolist()]
        targets = torch.stack([torch.as_tensor(y) for _, y in rows])
        if collate is not None:
            inputs = collate([x for x, _ in rows])
        else:
            inputs = torch.stack([torch.as_tensor(x) for x, _ in rows])
        batches.append(Batch(inputs, targets))
    return batches


def _require_extras(folder: Path, dataset: str, is_text: bool) -> None:
    """The packages of ``landscape[hf]`` this run needs, or one line naming the extra."""
    require("transformers", f"the Hugging Face folder {folder}")
    if is_text:
        source = Path(dataset.strip()[5:].strip()).expanduser()
        require("datasets" if source.is_dir() else "pandas", f"`dataset={dataset.strip()!r}`")


def _text_data(hf, dataset: str, split: str, text_columns, label_column):
    tok = load_tokenizer(hf.folder)
    if tok.pad_token is None:
        raise LandscapeError(
            f"the tokenizer of {hf.folder} has no padding token, so batches cannot be padded"
        )
    limits = [getattr(hf.config, "max_position_embeddings", None), tok.model_max_length]
    limits = [int(m) for m in limits if isinstance(m, int) and 0 < m < 1_000_000]
    data = load_text(
        dataset,
        tok,
        split=split,
        text_columns=tuple(text_columns) or ("text",),
        label_column=label_column,
        label2id=hf.label_names(),
        num_labels=hf.num_labels,
        max_length=min(limits) if limits else None,
    )
    return data, lambda rows: collate(tok, rows)


class _Relabelled(torch.utils.data.Dataset):
    """An image dataset with its class ids mapped to the model's and its pixels renormalised."""

    def __init__(self, data, ids: list[int], shift: tuple[torch.Tensor, torch.Tensor] | None):
        self.data = data
        self.ids = ids
        self.shift = shift

        labels = class_labels(data)
        self.targets = torch.tensor([ids[int(y)] for y in labels]) if labels is not None else None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x, y = self.data[i]
        if self.shift is not None:
            x = x * self.shift[0] + self.shift[1]
        return x, torch.as_tensor(self.ids[int(y)])


def _image_data(hf, dataset: str, split: str, data_root: str | None):
    data = load_dataset(dataset, split, root=data_root, augment=False)
    size = getattr(hf.config, "image_size", None)
    channels = getattr(hf.config, "num_channels", None)
    sizes = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    want = (channels, *sizes)
    if size is not None and channels is not None and tuple(data.input_shape) != want:
        raise LandscapeError(
            f"{dataset} has inputs of shape {tuple(data.input_shape)} but {hf.folder} takes "
            f"{want} (landscape does not resize images)"
        )
    names = hf.label_names()
    classes = list(data.classes) or [str(i) for i in range(data.num_classes)]
    if all(c in names for c in classes):
        ids = [names[c] for c in classes]
    elif all(n == f"LABEL_{i}" for n, i in names.items()) and len(classes) <= hf.num_labels:
        ids = list(range(len(classes)))  # a config with no label names: folder order
    else:
        unseen = [c for c in classes if c not in names]
        raise LandscapeError(
            f"class {unseen[0]!r} of {dataset} is not one of the labels of {hf.folder} "
            f"({', '.join(sorted(names, key=names.get)[:6])})"
        )
    shift = None
    proc = hf.folder / "preprocessor_config.json"
    if dataset.strip().lower().startswith("imagefolder:") and proc.is_file():
        try:
            cfg = json.loads(proc.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LandscapeError(f"{proc} is not readable JSON ({exc})") from None
        mean, std = cfg.get("image_mean"), cfg.get("image_std")
        if cfg.get("do_normalize", True) and mean is not None and std is not None:
            m0, s0 = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
            m1, s1 = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
            # x = (raw - m0) / s0  ->  (raw - m1) / s1 = x * s0 / s1 + (m0 - m1) / s1
            scale, offset = s0 / s1, (m0 - m1) / s1
            shift = (scale[:, None, None], offset[:, None, None])
    return _Relabelled(data.dataset, ids, shift)
