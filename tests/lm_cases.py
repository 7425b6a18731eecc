"""Tiny Hugging Face folders built offline: causal language models (GPT-2, Llama and GPT-NeoX)
and a BERT-style classifier, random weights, and word-level tokenizers made from small word lists
(saved with ``save_pretrained``, exactly as a fine-tune's folder is)."""

from __future__ import annotations

from pathlib import Path

import torch

#: The text the tests measure on: one sequence per line, of different lengths.
LINES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the bird sang a song",
    "my cat and my dog play",
    "it was a good day in the park",
    "the sun is warm",
    "a song for the bird",
    "we sat in the sun and the dog ran",
    "the mat is red",
    "play a good song",
    "the dog sat",
    "a warm day",
]


def make_lm_tokenizer(lines: list[str] = LINES, *, pad: bool = True, bos: bool = False):
    """A word-level fast tokenizer over the words of ``lines``.

    ``<pad>`` (when ``pad``), ``<unk>``, ``<s>`` and ``</s>`` (EOS) are its special tokens; with
    ``bos`` every encoding starts with ``<s>`` (as Llama's tokenizers do), else none is added
    (as GPT-2's).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = (["<pad>"] if pad else []) + ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=special))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    kwargs = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", **kwargs
    )


def save_tiny(folder: Path, tok, model_class, config, *, seed: int = 0, edit=None):
    """``model_class(config)`` with seeded random weights (``edit`` may change them), saved
    with its tokenizer by ``save_pretrained``, exactly as a fine-tune's folder is."""
    torch.manual_seed(seed)
    model = model_class(config)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def _special_ids(tok) -> dict[str, int]:
    """The config fields naming the tokenizer's BOS, EOS and pad tokens."""
    return {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def make_gpt2(
    folder: Path,
    tok=None,
    *,
    hidden: int = 8,
    layers: int = 2,
    positions: int = 32,
    seed: int = 0,
    tie: bool = True,
):
    """A tiny GPT2LMHeadModel (output layer tied to the token embeddings unless ``tie=False``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tok or make_lm_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=positions,
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        tie_word_embeddings=tie,
        **_special_ids(tok),
    )
    return save_tiny(folder, tok, GPT2LMHeadModel, config, seed=seed)


def make_llama(
    folder: Path,
    tok=None,
    *,
    hidden: int = 8,
    layers: int = 2,
    positions: int = 32,
    seed: int = 0,
):
    """A tiny LlamaForCausalLM (grouped-query attention, rotary positions, untied output)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tok or make_lm_tokenizer(bos=True)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=positions,
        tie_word_embeddings=False,
        **_special_ids(tok),
    )

    def random_norms(model) -> None:  # ones at init: no block's curvature should be special
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)

    return save_tiny(folder, tok, LlamaForCausalLM, config, seed=seed, edit=random_norms)


def make_neox(folder: Path, tok=None, *, hidden: int = 8, layers: int = 2, seed: int = 0):
    """A tiny GPTNeoXForCausalLM (Pythia's architecture: partial rotary, parallel residual)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = tok or make_lm_tokenizer()
    config = GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        rotary_pct=0.5,
        **_special_ids(tok),
    )
    return save_tiny(folder, tok, GPTNeoXForCausalLM, config, seed=seed)


def write_lines(path: Path, lines: list[str] = LINES) -> Path:
    """``lines`` as a text file, one per line."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- a BERT-style classifier (sequence classification, two labels) --------------------------------

#: Labelled sentences for the classifier: ``(text, label)``.
SENTENCES = [
    ("the movie was good", "pos"),
    ("a truly great film", "pos"),
    ("i loved the acting", "pos"),
    ("good story and great music", "pos"),
    ("the plot was bad", "neg"),
    ("a truly awful film", "neg"),
    ("i hated the ending", "neg"),
    ("bad acting and awful music", "neg"),
    ("great great good", "pos"),
    ("awful bad plot", "neg"),
    ("the music was good", "pos"),
    ("the story was bad", "neg"),
]


def make_tokenizer(texts: list[str]):
    """A word-level tokenizer trained on ``texts``, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def make_bert(folder: Path, *, hidden: int = 8, layers: int = 2, seed: int = 0, tok=None):
    """A tiny BertForSequenceClassification (2 labels, neg/pos) saved with save_pretrained."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = tok or make_tokenizer([s for s, _ in SENTENCES])
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        num_labels=2,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
        pad_token_id=tok.pad_token_id,
    )
    return save_tiny(folder, tok, BertForSequenceClassification, config, seed=seed)


def write_csv(path: Path, rows=SENTENCES, header=("text", "label")) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path
