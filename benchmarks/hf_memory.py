"""Memory per parameter of `landscape hessian` on Hugging Face BERT-style folders (issue 15).

Each case runs in a fresh Python process (so peaks do not mix). It writes a BERT-style
``BertForSequenceClassification`` folder (random weights, a word-level tokenizer trained on the
benchmark's own sentences, ``save_pretrained``: nothing is downloaded) and a CSV of ``--samples``
sentences of 24 words, loads them as ``landscape hessian FOLDER --dataset text:FILE`` does
(:func:`landscape_cli.workload.load_workload`), builds the Hessian operator (float32 products,
first-order graphs kept when they fit) and runs :func:`landscape_cli.hessian.analyze` with the
case's settings. Resident memory is read three times: after the imports (``start``), once the
folder and its samples are loaded (``loaded``), once the operator is built (``operator``: its
gradient and kept graphs), and the process's peak (``ru_maxrss``). The table gives each in bytes
per parameter of the model (n), counted from ``start``. On CUDA the same points are read with
``torch.cuda.memory_allocated``/``max_memory_allocated``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hf_memory.py
    .venv/bin/python benchmarks/hf_memory.py --sizes 256x4 --cases top5 --device cuda

Sizes ``HxL``: hidden size H, L layers, 4·H intermediate, H/64 heads (at least 2), a 2,000-word
vocabulary, 64 positions. Cases: ``top1`` (``--top-k 1`` only), ``top5`` (``--top-k 5`` only),
``default`` (the defaults of ``landscape hessian``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The same cases and resident-memory reading as the ResNet-18 benchmark beside this file.
from memory import CASES, rss_now


def make_folder(d: Path, hidden: int, layers: int, samples: int) -> tuple[Path, Path]:
    """A BERT-style classifier folder and a CSV of random 24-word sentences (two classes)."""
    import csv
    import random

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    rng = random.Random(0)
    words = [f"w{i}" for i in range(1996)]
    rows = [(" ".join(rng.choice(words) for _ in range(24)), i % 2) for i in range(samples)]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]",
    )  # fmt: skip
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
        num_labels=2,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    folder = d / "ft"
    BertForSequenceClassification(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    data = d / "data.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return folder, data


def run_case(case: str, size: str, device: str, samples: int) -> dict:
    """Measure one case in this process (called in a child process)."""
    import torch
    from transformers.utils import logging as hf_logging

    from landscape_cli import hessian as hs
    from landscape_cli.workload import Source, load_workload

    hf_logging.disable_progress_bar()
    import pandas  # noqa: F401 - imported before ``start``: what the loaders import is not
    import transformers  # noqa: F401 - the model's memory

    import landscape_cli.data.text
    import landscape_cli.models.hf  # noqa: F401

    hidden, layers = (int(v) for v in size.split("x"))
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder, data = make_folder(Path(tmp), hidden, layers, samples)
        mem = (lambda: torch.cuda.memory_allocated()) if cuda else rss_now
        start = mem()
        work = load_workload(folder, Source(dataset=f"text:{data}", samples=samples, batch_size=32))
        if cuda:
            work.model.to(dev)
        loaded = mem()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        op = hs.HessianOperator(work.model, work.batches, device=dev)
        built = mem()
        t0 = time.perf_counter()
        results = hs.analyze(op, hs.HessianSettings(**CASES[case]))
        seconds = time.perf_counter() - t0
        if cuda:
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    top = results.top
    tokens = sum(int(b.inputs["attention_mask"].sum()) for b in work.batches)
    return {
        "case": case,
        "size": size,
        "n": op.n,
        "tokens": tokens,
        "hvps": op.hvp_count,
        "steps": top.steps if top is not None else 0,
        "seconds": seconds,
        "start": start,
        "loaded": loaded,
        "operator": built,
        "peak": peak,
        "graphs_kept": op.cache_graphs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128x2,256x4")
    parser.add_argument("--cases", default="top1,top5")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.size, args.device, args.samples)))
        return
    print(f"BERT-style folders, {args.samples} samples of 26 tokens, device {args.device}; "
          "bytes per parameter counted from the memory after the imports")  # fmt: skip
    print(f"{'size':7} {'case':8} {'params':>10} {'HVPs':>5} {'steps':>5} {'seconds':>8} "
          f"{'loaded':>7} {'operator':>8} {'peak':>6}")  # fmt: skip
    for size in args.sizes.split(","):
        for case in args.cases.split(","):
            cmd = [sys.executable, __file__, "--child", case, "--size", size, "--device",
                   args.device, "--samples", str(args.samples)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                tail = (out.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{size:7} {case:8} failed (exit {out.returncode}): {tail}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            n = r["n"]

            def per(key: str, r=r, n=n) -> float:
                return (r[key] - r["start"]) / n

            print(
                f"{size:7} {case:8} {n:10,d} {r['hvps']:5d} {r['steps']:5d} {r['seconds']:8.1f} "
                f"{per('loaded'):7.1f} {per('operator'):8.1f} {per('peak'):6.1f}"
            )


if __name__ == "__main__":
    main()
