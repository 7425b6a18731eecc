"""Local Hugging Face model folders (``config.json`` + weights + tokenizer or image processor).

A folder is loaded with ``transformers`` from the disk only (``local_files_only=True``, the hub
switched off, never a download) as ``AutoModelForSequenceClassification``,
``AutoModelForImageClassification`` or ``AutoModelForCausalLM``, chosen by the first entry of
the config's ``architectures`` (which must be one of transformers' own sequence- or
image-classification or causal language model classes: code shipped inside the folder,
``auto_map``, is never run; masked language models and sequence-to-sequence models are refused).
Attention runs on the ``eager`` implementation, which has a double backward (checked after
loading; a model without an eager path runs ``sdpa`` on the math kernel, which has one too, see
:func:`landscape_cli.batches.math_attention`).

Weights: ``model.safetensors`` (or sharded ``*.safetensors`` with their index) load as they are;
pickled ``pytorch_model.bin`` weights need ``trust`` (``--trust-checkpoint``), as ``.pt`` files do.
They must fit the model the config builds: a weight the model has and the files lack, one the
files have and the model lacks, or one of another shape is an error (:func:`_check_loaded`),
never a randomly initialised tensor.

The model is wrapped in :class:`HFClassifier` (:class:`HFCausalLM` for language models), a plain
``nn.Module`` whose ``forward`` takes the batch's inputs (a dict of tensors for text, the pixel
tensor for images) and returns the logits, so that every estimator calls it as it calls any other
network. Its parameters are named ``net.<the transformers name>``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_cli.errors import LandscapeError, one_line

#: Weight files of a folder, in the order transformers prefers them.
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
#: The ``--per-layer`` groups: a parameter whose name holds ``<layer|layers|h|block|blocks>.N.``
#: belongs to that transformer block; the others to their first module below the base model.
_BLOCK = re.compile(r"^(.*?\b(?:layer|layers|h|block|blocks)\.\d+)\.")
#: Files that hold a tokenizer's vocabulary (one of them must be in a text model's folder).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "merges.txt",
)


def is_hf_folder(path: str | os.PathLike[str]) -> bool:
    """A folder holding a ``config.json`` (what makes ``--model hf:`` implied)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def is_hf_spec(model: str | None) -> bool:
    """Whether ``model`` is a ``hf:`` spec (a Hugging Face folder)."""
    return isinstance(model, str) and model.strip().lower().startswith("hf:")


def weight_files(folder: Path) -> list[Path]:
    """The files that hold the folder's weights (what its SHA-256 covers), sorted."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    files += [folder / n for n in (SAFE_WEIGHTS[1], PICKLED_WEIGHTS[1]) if (folder / n).is_file()]
    return sorted(f for f in files if f.is_file())


class HFClassifier(nn.Module):
    """A transformers classifier as a network from inputs to logits.

    ``forward(inputs)`` calls the model with ``**inputs`` when ``inputs`` is a dict (token ids,
    attention mask, token type ids), else with ``pixel_values=inputs``, and returns ``.logits``.

    Args:
        net: the transformers sequence or image classification model.
        task: ``"text"`` or ``"image"``.
    """

    def __init__(self, net: nn.Module, task: str) -> None:
        super().__init__()
        self.net = net
        self.task = task

    def forward(self, inputs: Any) -> torch.Tensor:
        """Logits of a batch: a dict of tokenizer outputs, or pixel values."""
        if isinstance(inputs, dict):
            return self.net(**inputs).logits
        return self.net(pixel_values=inputs).logits

    def parameter_group(self, name: str) -> str:
        """The ``--per-layer`` group of parameter ``name``.

        Its transformer block (``net.bert.encoder.layer.0``), else its first module under the base
        model (``net.bert.embeddings``, ``net.classifier``).
        """
        m = _BLOCK.match(name)
        if m:
            return m.group(1)
        parts = name.split(".")
        base = getattr(self.net, "base_model_prefix", "")
        if len(parts) > 2 and parts[1] == base:
            return ".".join(parts[:3]) if len(parts) > 3 else ".".join(parts[:2])
        return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


class HFCausalLM(HFClassifier):
    """A transformers causal language model as a network from token ids to next-token logits.

    ``forward(inputs)`` calls the model with the batch's ``input_ids`` and ``attention_mask``
    (no key-value cache) and returns the logits ``(sequences, positions, vocabulary)``.
    ``--per-layer`` groups: each transformer block (``net.transformer.h.3``,
    ``net.model.layers.3``, ``net.gpt_neox.layers.3``), ``embeddings`` (every parameter before
    the first block: token and position embeddings, and an output layer tied to them, which is
    the same tensor) and ``head`` (every parameter after the last block: the final norm and an
    untied output layer).

    Args:
        net: the transformers causal language model.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net, "causal-lm")
        names = [f"net.{k}" for k, _ in net.named_parameters()]
        blocks = [i for i, k in enumerate(names) if _BLOCK.match(k)]
        first = blocks[0] if blocks else len(names)
        self._outside = {k: ("embeddings" if i < first else "head") for i, k in enumerate(names)}

    def forward(self, inputs: Any) -> torch.Tensor:
        """Logits of a batch of padded token ids (a dict with ``input_ids``, ``attention_mask``)."""
        return self.net(**inputs, use_cache=False).logits

    def parameter_group(self, name: str) -> str:
        """The ``--per-layer`` group of parameter ``name`` (the class docstring)."""
        m = _BLOCK.match(name)
        if m:
            return m.group(1)
        return self._outside.get(name, "head")

    def positions(self) -> int | None:
        """The most positions the model takes (its config's), None when it names none."""
        config = self.net.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None


@dataclass(frozen=True)
class HFFolder:
    """A loaded folder: the wrapped model, its config and its preprocessing facts."""

    model: HFClassifier
    config: Any
    folder: Path
    task: str  # "text", "image" or "causal-lm"
    architecture: str

    @property
    def num_labels(self) -> int:
        """The number of classes the model's config declares."""
        return int(self.config.num_labels)

    def label_names(self) -> dict[str, int]:
        """``label2id`` of the config, with ``id2label`` read backwards as a fallback."""
        out = {str(k): int(v) for k, v in (getattr(self.config, "label2id", None) or {}).items()}
        for i, name in (getattr(self.config, "id2label", None) or {}).items():
            out.setdefault(str(name), int(i))
        return out


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not folder.exists():
        raise LandscapeError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise LandscapeError(f"`model='hf:'` needs a model folder, but {folder} is a file")
    if not path.is_file():
        raise LandscapeError(
            f"{folder} has no config.json: not a Hugging Face model folder (save one with "
            "save_pretrained)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LandscapeError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise LandscapeError(f"{path} does not hold a JSON object")
    return config


def _architecture(config: dict[str, Any], folder: Path) -> tuple[str, str]:
    """The config's architecture and its task.

    Refused unless transformers classifies with it or models language causally with it.
    """
    # lazy: optional (the hf extra)
    from transformers.models.auto import modeling_auto as auto

    known = {
        "text": set(auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values()),
        "image": set(auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values()),
        "causal-lm": set(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()),
    }
    later = {
        "a masked language model": set(auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES.values()),
        "a sequence-to-sequence model": set(
            auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values()
        ),
    }
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise LandscapeError(
            f"{folder}/config.json names no architecture ('architectures'); landscape reads "
            "*ForSequenceClassification, *ForImageClassification and causal language model "
            "(*ForCausalLM, *LMHeadModel) folders"
        )
    arch = archs[0]
    for kind, names in later.items():
        if arch in names:
            raise LandscapeError(
                f"{folder}: {arch} is {kind}, which landscape does not measure yet; it reads "
                "causal language models (*ForCausalLM, *LMHeadModel) and sequence and image "
                "classifiers"
            )
    for task, names in known.items():
        if arch in names:
            if config.get("model_type") is None:
                raise LandscapeError(f"{folder}/config.json has no model_type")
            return arch, task
    raise LandscapeError(
        f"{folder}: unknown architecture {arch!r}; landscape reads the sequence- and "
        "image-classification and causal language model architectures of transformers (e.g. "
        "BertForSequenceClassification, ViTForImageClassification, GPT2LMHeadModel, "
        "LlamaForCausalLM)"
    )


def _has_safe_weights(folder: Path, trust: bool) -> bool:
    """Whether ``folder`` holds safetensors weights.

    Refuses a folder with no weights, or with only pickled ones unless ``trust``.
    """
    safe = any((folder / n).is_file() for n in SAFE_WEIGHTS) or any(folder.glob("*.safetensors"))
    pickled = any((folder / n).is_file() for n in PICKLED_WEIGHTS)
    if not safe and not pickled:
        raise LandscapeError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin)")
    if not safe and not trust:
        raise LandscapeError(
            f"{folder} holds pickled weights (pytorch_model.bin), which can run arbitrary code "
            "when loaded; pass `trust=True` only if you trust where the folder came from, "
            "or convert them to model.safetensors"
        )
    return safe


def load_hf_folder(folder: str | os.PathLike[str], *, trust: bool = False) -> HFFolder:
    """Load a local Hugging Face classifier folder (on the CPU, float32, eval mode)."""
    folder = Path(folder)
    raw = _read_config(folder)
    arch, task = _architecture(raw, folder)
    safe = _has_safe_weights(folder, trust)
    _offline()
    # lazy: optional (the hf extra)
    import transformers
    from transformers.utils import logging as hf_logging

    cls = {
        "text": transformers.AutoModelForSequenceClassification,
        "image": transformers.AutoModelForImageClassification,
        "causal-lm": transformers.AutoModelForCausalLM,
    }[task]
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the load report and its bars are not the user's business
    hf_logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
        kwargs = dict(
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=bool(safe),
            dtype=torch.float32,
            # What does not fit is reported, then refused below (never randomly initialised).
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
        try:
            net, info = cls.from_pretrained(str(folder), attn_implementation="eager", **kwargs)
        except ValueError as exc:
            if "attn_implementation" not in str(exc) and "eager" not in str(exc):
                raise
            net, info = cls.from_pretrained(str(folder), attn_implementation="sdpa", **kwargs)
    except LandscapeError:
        raise
    except Exception as exc:  # transformers fails in many ways on broken folders
        reason = one_line(exc)[:300]
        raise LandscapeError(f"cannot load the model in {folder}: {reason}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    _check_loaded(net, info, folder, arch)
    impl = getattr(net.config, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        raise LandscapeError(
            f"{folder}: attention runs on {impl!r}, which has no double backward; landscape "
            "needs eager (or sdpa on the math kernel)"
        )
    net = net.float().eval()
    wrapper = HFCausalLM(net) if task == "causal-lm" else HFClassifier(net, task)
    return HFFolder(wrapper, net.config, folder, task, arch)


def _check_loaded(net: nn.Module, info: dict[str, Any], folder: Path, arch: str) -> None:
    """Refuse a folder whose weights do not fit the model its config builds.

    ``info`` is transformers' loading report (``output_loading_info``): keys of the model that
    the weights lack (which transformers would initialise at random), keys of the weights the
    model lacks, and tensors of another shape. Tied weights (an output layer sharing the input
    embeddings) and the buffers transformers recreates itself (``position_ids``, rotary
    frequencies) are not in it. Any of the three is one error line naming the first keys, with
    the words of :func:`landscape_cli.checkpoints.fit_state_dict` for ``.pt`` files.
    """
    # lazy: import cycle with checkpoints (it imports models.hf)
    from landscape_cli.checkpoints import mismatch_summary

    order = {k: i for i, k in enumerate(net.state_dict())}
    missing = sorted(info.get("missing_keys") or (), key=lambda k: (order.get(k, len(order)), k))
    unexpected = sorted(info.get("unexpected_keys") or ())
    shapes = [
        f"{k} {tuple(theirs)} vs {tuple(ours)}"
        for k, theirs, ours in sorted(
            info.get("mismatched_keys") or (), key=lambda m: (order.get(m[0], len(order)), m[0])
        )
    ]
    errors = [one_line(e) for e in info.get("error_msgs") or ()]
    if not (missing or unexpected or shapes or errors):
        return
    summary = mismatch_summary(missing, unexpected, shapes) or errors[0][:200]
    raise LandscapeError(
        f"{folder} does not fit the model its config.json builds ({arch}): {summary}; check "
        "the config's model_type and architectures against the weights (landscape never "
        "measures randomly initialised weights)"
    )


def load_tokenizer(folder: Path):
    """The folder's own tokenizer.

    The folder's own tokenizer (refused with one line when it has none: transformers would
    otherwise make up an empty one from the config's model type).
    """
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise LandscapeError(
            f"{folder} has no tokenizer for text data (none of {', '.join(TOKENIZER_FILES[:3])}, "
            "...); save the fine-tune's tokenizer beside it with tokenizer.save_pretrained"
        )
    _offline()
    # lazy: optional (the hf extra)
    import transformers
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        reason = one_line(exc)[:200]
        raise LandscapeError(
            f"{folder} has no usable tokenizer for text data (save one beside the model with "
            f"tokenizer.save_pretrained): {reason}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tok is None or isinstance(tok, bool):
        raise LandscapeError(f"{folder} has no tokenizer for text data")
    return tok


def folder_of(model: str | None, checkpoint: Path) -> Path:
    """The folder a ``hf:`` spec names.

    The folder a ``hf:`` spec names (``hf:`` alone: the checkpoint), which must be the
    checkpoint folder itself.
    """
    text = (model or "hf:").strip()[3:].strip()
    folder = Path(text) if text else checkpoint
    if folder.resolve() != checkpoint.resolve():
        raise LandscapeError(
            f"`model={model!r}` names another folder than the checkpoint {checkpoint}; the "
            "checkpoint argument is the Hugging Face folder itself (`model='hf:'` may be left out)"
        )
    return checkpoint
