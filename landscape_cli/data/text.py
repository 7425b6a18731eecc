"""Text data for Hugging Face folders: ``--dataset text:FILE``.

``FILE`` is a local CSV (``.csv``, ``.tsv``), JSON Lines (``.jsonl``, ``.json``) or Parquet
(``.parquet``) file, a plain text file (``.txt``: one text per line, its column is ``text``), or
a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose
``train``/``test`` split is taken; ``validation`` serves ``test`` when there is no ``test``). A
single file is one set of samples: ``--split test`` on it is refused.

Causal language models read one text column and no labels: :func:`load_lm_text` (sequences or
``pack`` blocks) and :func:`causal_batches` (padded batches with next-token targets). The rest of
this docstring is about classifiers.

Columns: ``text_columns`` (one, or two for sentence pairs; default ``text``) and
``label_column`` (default ``label``). Each row is tokenised once with the folder's own tokenizer
(truncated to the model's maximum length); batches are padded to their longest row
(``tokenizer.pad``), with the attention mask marking the real tokens.

Labels map to the model's class ids by the rule: a label equal to a name in the config's
``label2id`` (or ``id2label``) takes that id; otherwise an integer (or an integer-valued string
or float) in ``0..num_labels-1`` is the id itself; anything else is an unseen label and an error.
A one-label model (regression) takes floating-point labels as they are.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape_cli.batches import Batch
from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.token_loss import IGNORE, TokenTargets, token_weights

READERS = {
    ".txt": "lines",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def text_path(spec: str) -> Path:
    """The path in a ``text:PATH`` spec."""
    text = spec.strip()
    if not text.lower().startswith("text:") or not text[5:].strip():
        raise LandscapeError(f"`dataset`: expected text:FILE, got {spec!r}")
    return Path(text[5:].strip())


def read_table(path: Path, split: str) -> dict[str, list[Any]]:
    """The columns of a CSV/JSON Lines/Parquet file or a ``save_to_disk`` folder."""
    if not path.exists():
        raise LandscapeError(f"text data not found: {path}")
    if path.is_dir():
        return _read_saved(path, split)
    if split != "train":
        raise LandscapeError(
            f"{path} is a single file (one set of samples); `split={split!r}` applies to a "
            "datasets save_to_disk folder with splits"
        )
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise LandscapeError(
            f"{path}: unknown text file type {path.suffix!r}; use .txt, .csv, .tsv, .jsonl, "
            ".json or .parquet"
        )
    if kind == "lines":
        return {"text": _read_lines(path)}
    # lazy: optional (the hf extra)
    import pandas as pd

    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="," if kind == "csv" else "\t", keep_default_na=False)
        elif kind == "jsonl":
            try:
                frame = pd.read_json(path, lines=True)
            except ValueError:
                frame = pd.read_json(path)  # a JSON array of rows
        else:
            frame = pd.read_parquet(path)
    except LandscapeError:
        raise
    except Exception as exc:  # pandas/pyarrow fail in many ways on bad files
        reason = one_line(exc)[:200]
        raise LandscapeError(f"cannot read {path} as {kind}: {reason}") from None
    return {str(c): frame[c].tolist() for c in frame.columns}


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without their line ends (one sequence per line)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LandscapeError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise LandscapeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_saved(path: Path, split: str) -> dict[str, list[Any]]:
    # lazy: optional (the hf extra)
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:
        reason = one_line(exc)[:200]
        raise LandscapeError(
            f"{path} is a folder but not a datasets save_to_disk folder: {reason}"
        ) from None
    if isinstance(data, datasets.DatasetDict):
        names = [split] + (["validation"] if split == "test" else [])
        chosen = next((n for n in names if n in data), None)
        if chosen is None:
            raise LandscapeError(f"{path} has no {split!r} split (it has {', '.join(data.keys())})")
        data = data[chosen]
    return {c: list(data[c]) for c in data.column_names}


@dataclass(frozen=True)
class TextDataset(torch.utils.data.Dataset):
    """Tokenised rows (dicts of token-id lists) and their class ids (``targets``)."""

    features: tuple[dict[str, list[int]], ...]
    targets: torch.Tensor

    def __len__(self) -> int:
        """The number of examples."""
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[dict[str, list[int]], torch.Tensor]:
        """Example ``i``: its tokenized features and its target."""
        return self.features[i], self.targets[i]


def map_labels(values: list[Any], label2id: dict[str, int], num_labels: int, column: str):
    """Class ids of ``values`` by the module's rule; a float tensor for a one-label model."""
    if num_labels == 1:
        try:
            out = [float(v) for v in values]
        except (TypeError, ValueError):
            raise LandscapeError(
                f"the model has one output (regression) but column {column!r} holds non-numbers"
            ) from None
        return torch.tensor(out, dtype=torch.float32)
    ids = []
    for v in values:
        key = v.item() if hasattr(v, "item") else v
        if isinstance(key, str) and key in label2id:
            ids.append(label2id[key])
            continue
        number: int | None = None
        if isinstance(key, bool):
            number = int(key)
        elif isinstance(key, int):
            number = key
        elif isinstance(key, float) and math.isfinite(key) and key == int(key):
            number = int(key)
        elif isinstance(key, str) and key.strip().lstrip("-").isdigit():
            number = int(key.strip())
        if number is None or not 0 <= number < num_labels:
            names = ", ".join(sorted(label2id, key=label2id.get)[:6]) or "none"
            raise LandscapeError(
                f"label {key!r} in column {column!r} is not one of the model's labels "
                f"(names: {names}; or ids 0..{num_labels - 1})"
            )
        ids.append(number)
    return torch.tensor(ids, dtype=torch.long)


def load_text(
    spec: str,
    tokenizer,
    *,
    split: str = "train",
    text_columns: tuple[str, ...] = ("text",),
    label_column: str = "label",
    label2id: dict[str, int],
    num_labels: int,
    max_length: int | None = None,
) -> TextDataset:
    """Read ``text:FILE``, tokenise each row once and map its label (see the module docstring)."""
    if not 1 <= len(text_columns) <= 2:
        raise LandscapeError(
            f"`text_columns` holds one column, or two for sentence pairs; got {len(text_columns)}"
        )
    path = text_path(spec)
    table = read_table(path, split)
    for col in (*text_columns, label_column):
        if col not in table:
            raise LandscapeError(
                f"{path} has no column {col!r} (it has {', '.join(table) or 'none'}); name them "
                "with `text_columns` and `label_column`"
            )
    n = len(table[label_column])
    if n == 0:
        raise LandscapeError(f"{path} holds no rows")
    texts = []
    for col in text_columns:
        values = table[col]
        bad = next((v for v in values if not isinstance(v, str)), None)
        if bad is not None:
            raise LandscapeError(f"column {col!r} of {path} holds a non-text value {bad!r}")
        texts.append(values)
    targets = map_labels(table[label_column], label2id, num_labels, label_column)
    try:
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
    except Exception as exc:
        reason = one_line(exc)[:200]
        raise LandscapeError(f"the tokenizer failed on {path}: {reason}") from None
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = tuple({k: list(enc[k][i]) for k in keys} for i in range(n))
    return TextDataset(features, targets)


def collate(tokenizer, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Pad a batch of tokenised rows to its longest one; the attention mask marks real tokens."""
    out = tokenizer.pad(list(rows), padding="longest", return_tensors="pt")
    batch = {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in out}
    if "attention_mask" not in batch:
        raise LandscapeError("the tokenizer gives no attention mask")
    return batch


# -- causal language models ------------------------------------------------------------------


class TokenSequences(torch.utils.data.Dataset):
    """Token-id sequences (or ``pack`` blocks) of a language model's text data.

    They have no class labels (``targets`` is a float vector), so
    :func:`~landscape_cli.batches.select_indices` draws a seeded uniform subset of them.
    """

    def __init__(self, sequences: list[list[int]]) -> None:
        self.sequences = sequences
        self.targets = torch.zeros(len(sequences))  # no class labels: uniform selection

    def __len__(self) -> int:
        """The number of sequences."""
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[list[int], torch.Tensor]:
        """Sequence ``i`` and its (meaningless) target."""
        return self.sequences[i], self.targets[i]


def load_lm_text(
    spec: str,
    tokenizer,
    *,
    split: str = "train",
    text_column: str = "text",
    seq_len: int,
    pack: bool = False,
) -> TokenSequences:
    """The token sequences of ``text:FILE`` for a causal language model.

    ``FILE`` is a ``.txt`` file (one sequence per line) or any table :func:`read_table` reads,
    whose ``text_column`` holds the sequences; blank texts are left out. Each text is encoded
    by ``tokenizer`` as it encodes a text (its own special tokens, nothing added). Without
    ``pack`` each encoding, truncated to ``seq_len`` tokens, is a sequence. With ``pack`` the
    encodings are concatenated with the tokenizer's EOS token between consecutive ones and the
    stream is cut into consecutive blocks of ``seq_len`` tokens; the last, shorter, piece is
    left out.
    """
    path = text_path(spec)
    table = read_table(path, split)
    if text_column not in table:
        raise LandscapeError(
            f"{path} has no column {text_column!r} (it has {', '.join(table) or 'none'}); name "
            "it with `text_columns`"
        )
    values = table[text_column]
    bad = next((v for v in values if not isinstance(v, str)), None)
    if bad is not None:
        raise LandscapeError(f"column {text_column!r} of {path} holds a non-text value {bad!r}")
    texts = [v for v in values if v.strip()]
    if not texts:
        raise LandscapeError(f"{path} holds no text (every {text_column!r} is empty or blank)")
    eos = tokenizer.eos_token_id
    if pack and eos is None:
        raise LandscapeError(
            "`pack=True` separates the sequences with the EOS token, but the tokenizer has none"
        )
    # lazy: optional (the hf extra)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "longer than the maximum" is what packing is for
    try:
        if pack:
            enc = tokenizer(texts)["input_ids"]
        else:
            enc = tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]
    except Exception as exc:
        reason = one_line(exc)[:200]
        raise LandscapeError(f"the tokenizer failed on {path}: {reason}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if not pack:
        return TokenSequences([list(map(int, ids))[:seq_len] for ids in enc])
    return TokenSequences(pack_blocks(enc, int(eos), seq_len, str(path)))


def pack_blocks(encodings: list[list[int]], eos: int, seq_len: int, source: str) -> list[list[int]]:
    """``encodings`` joined by ``eos`` and cut into blocks of ``seq_len`` (the tail dropped).

    >>> pack_blocks([[1, 2, 3], [4, 5], [6]], 0, 3, "f")
    [[1, 2, 3], [0, 4, 5]]
    """
    stream: list[int] = []
    for i, ids in enumerate(encodings):
        if i:
            stream.append(eos)
        stream.extend(int(t) for t in ids)
    if len(stream) < seq_len:
        raise LandscapeError(
            f"{source} holds {len(stream)} tokens, fewer than one block of `seq_len={seq_len}`; "
            "lower `seq_len` or leave out `pack`"
        )
    return [stream[s : s + seq_len] for s in range(0, len(stream) - seq_len + 1, seq_len)]


def causal_batches(
    sequences: list[list[int]], batch_size: int, pad_id: int | None, source: str
) -> list[Any]:
    """Batches of token sequences for a causal language model, in order.

    Each batch is padded on the right to its longest sequence with ``pad_id`` (the attention mask
    marks the real tokens); position ``t`` of a sequence predicts its token ``t + 1``, and its
    last token and the padding predict none
    (:data:`~landscape_cli.token_loss.IGNORE`). The weights of
    :func:`~landscape_cli.token_loss.token_weights` make the batches' losses average to the mean
    over every predicted token.
    """
    parts = []
    for start in range(0, len(sequences), batch_size):
        rows = sequences[start : start + batch_size]
        width = max(len(r) for r in rows)
        if pad_id is None and any(len(r) != width for r in rows):
            raise LandscapeError(
                f"the sequences of {source} differ in length, so a batch must be padded, but the "
                "tokenizer has no padding token; pass `pack=True` (blocks of `seq_len` tokens) or "
                "save a tokenizer with a pad token"
            )
        ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            labels[i, : len(r) - 1] = torch.tensor(r[1:], dtype=torch.long)
        parts.append(({"input_ids": ids, "attention_mask": mask}, labels))
    weights = token_weights([y for _, y in parts])
    if not any(bool((y != IGNORE).any()) for _, y in parts):
        raise LandscapeError(
            f"no sequence of {source} has two tokens: there is no next token to predict"
        )
    return [Batch(x, TokenTargets(y, w)) for (x, y), w in zip(parts, weights, strict=True)]


def sequences_sha256(sequences: list[list[int]]) -> str:
    """SHA-256 of the token ids of ``sequences`` in order (each as its length, then its ids).

    Recorded as the samples' hash of a language model's results, so that other text, another
    ``seq_len`` or ``pack`` is never taken for the same samples.
    """
    h = hashlib.sha256()
    for seq in sequences:
        h.update(len(seq).to_bytes(8, "little"))
        h.update(torch.tensor(seq, dtype=torch.int64).numpy().astype("<i8").tobytes())
    return h.hexdigest()
