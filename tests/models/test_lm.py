"""Causal language models (issue 23.1): tiny GPT-2 and Llama folders built offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cases import runner
from lm_cases import (
    LINES,
    make_bert,
    make_gpt2,
    make_llama,
    make_lm_tokenizer,
    make_neox,
    write_csv,
    write_lines,
)

from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.token_loss import IGNORE

MAKERS = {"gpt2": make_gpt2, "llama": make_llama}


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> Path:
    """``gpt2`` (tied output layer), ``gpt2b`` (another fine-tune of the same shape), ``llama``,
    ``neox``, and the text ``t.txt``."""
    d = tmp_path_factory.mktemp("lm")
    tok = make_lm_tokenizer()
    make_gpt2(d / "gpt2", tok)
    make_gpt2(d / "gpt2b", tok, seed=1)
    make_llama(d / "llama")
    make_neox(d / "neox")
    write_lines(d / "t.txt")
    return d


def _work(folder: Path, data: Path, **kw):
    from landscape_cli.workload import Source, load_workload

    opts = dict(dataset=f"text:{data}", samples=0, batch_size=5)
    opts.update(kw)
    return load_workload(folder, Source(**opts))


def _own_losses(net, sequences: list[list[int]]) -> tuple[float, int]:
    """Σ over sequences of transformers' own loss × predicted tokens, and the token count."""
    total, count = 0.0, 0
    with torch.no_grad():
        for seq in sequences:
            ids = torch.tensor([seq])
            loss = net(input_ids=ids, labels=ids).loss
            total += float(loss) * (len(seq) - 1)
            count += len(seq) - 1
    return total, count


@pytest.mark.parametrize("name", ["gpt2", "llama", "neox"])
def test_loss_is_the_models_own_mean_over_tokens(lms: Path, name: str) -> None:
    """Sequences of different lengths, padded in batches of 5: the loss is the mean over every
    predicted token, i.e. transformers' own loss of each unpadded sequence weighted by its
    predicted tokens; on one batch of blocks without padding (``pack``) it is transformers' loss
    of that batch."""
    from landscape_cli.losses import LOSSES, loss_and_accuracy

    work = _work(lms / name, lms / "t.txt")
    net = work.model.net
    sequences = [
        [int(t) for t, m in zip(ids, mask, strict=True) if m]
        for b in work.batches
        for ids, mask in zip(b.inputs["input_ids"], b.inputs["attention_mask"], strict=True)
    ]
    assert sorted(len(s) for s in sequences) != [len(sequences[0])] * len(sequences)  # padding
    assert any(bool((b.inputs["attention_mask"] == 0).any()) for b in work.batches)
    total, count = _own_losses(net, sequences)
    got, _ = loss_and_accuracy(work.model, work.batches, LOSSES["ce"])
    assert got == pytest.approx(total / count, rel=1e-6)

    packed = _work(lms / name, lms / "t.txt", pack=True, seq_len=6, batch_size=3)
    ids = torch.cat([b.inputs["input_ids"] for b in packed.batches])
    with torch.no_grad():
        want = float(net(input_ids=ids, labels=ids).loss)
    got, _ = loss_and_accuracy(packed.model, packed.batches, LOSSES["ce"])
    assert got == pytest.approx(want, rel=1e-6)


def test_accuracy_is_next_token_accuracy(lms: Path) -> None:
    from landscape_cli.losses import LOSSES, loss_and_accuracy

    work = _work(lms / "llama", lms / "t.txt")
    hits = count = 0
    with torch.no_grad():
        for b in work.batches:
            pred = work.model(b.inputs).argmax(-1)
            keep = b.targets.labels != IGNORE
            hits += int((pred[keep] == b.targets.labels[keep]).sum())
            count += int(keep.sum())
    _, acc = loss_and_accuracy(work.model, work.batches, LOSSES["ce"])
    assert acc == pytest.approx(hits / count, rel=1e-12) and hits > 0


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_padding_changes_nothing(lms: Path, name: str) -> None:
    """Batches of 5 padded sequences against one unpadded sequence per batch: the same loss,
    gradient and Hessian-vector products (float64)."""
    from landscape_cli.hessian import HessianOperator

    ops = []
    for batch_size in (5, 1):
        work = _work(lms / name, lms / "t.txt", batch_size=batch_size)
        padded = any(bool((b.inputs["attention_mask"] == 0).any()) for b in work.batches)
        assert padded == (batch_size > 1)
        ops.append(
            HessianOperator(work.model, work.batches, dtype=torch.float64, keep_gradient=True)
        )
    a, b = ops
    # Llama's RMSNorm computes in float32 whatever the model's dtype (transformers' choice), so
    # its float64 products agree to float32 rounding; GPT-2's to float64 rounding.
    rel = 1e-6 if name == "llama" else 1e-10
    assert a.loss_value == pytest.approx(b.loss_value, rel=rel)
    assert (a.gradient - b.gradient).abs().max() <= rel * a.gradient.abs().max()
    v = torch.randn(a.n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hv = a.matmat(v)
    assert (hv - b.matmat(v)).abs().max() <= rel * hv.abs().max()


def _dense_hessian(net, batches) -> torch.Tensor:
    """The dense Hessian of the mean next-token cross-entropy over all predicted tokens, built
    independently: torch.func.jacfwd of torch.func.grad of transformers' model on the unpadded
    token ids, with the shift and the mean written out here."""
    from torch.func import functional_call, grad, jacfwd

    names = [k for k, _ in net.named_parameters()]
    params = {k: p.detach() for k, p in net.named_parameters()}
    sizes = [params[k].numel() for k in names]
    seqs = [
        ids[mask.bool()]
        for b in batches
        for ids, mask in zip(b.inputs["input_ids"], b.inputs["attention_mask"], strict=True)
    ]
    count = sum(len(s) - 1 for s in seqs)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = zip(names, flat.split(sizes), strict=True)
        ps = {k: part.reshape(params[k].shape) for k, part in parts}
        out = 0.0
        for s in seqs:
            logits = functional_call(net, ps, (), {"input_ids": s[None], "use_cache": False})
            ce = torch.nn.functional.cross_entropy(logits.logits[0, :-1], s[1:], reduction="sum")
            out = out + ce / count
        return out

    flat = torch.cat([params[k].reshape(-1) for k in names])
    return jacfwd(grad(loss))(flat)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_operator_equals_dense_hessian(tmp_path: Path, name: str) -> None:
    """The operator (padded batches, float64) against the dense Hessian of the same loss: every
    product to 1e-6 of the largest entry, and the top eigenvalues of Lanczos to 1e-6."""
    from landscape_cli.hessian import HessianOperator, lanczos_top

    kw = {"positions": 16}
    if name == "gpt2":
        kw["tie"] = False  # the tied case is the fixture's; here the head has its own block
    MAKERS[name](tmp_path / name, hidden=4, **kw)
    write_lines(tmp_path / "t.txt")
    work = _work(tmp_path / name, tmp_path / "t.txt", samples=6, batch_size=4)
    net = work.model.net.double()
    op = HessianOperator(work.model, work.batches, dtype=torch.float64)
    assert op.n == sum(p.numel() for p in net.parameters()) and op.n < 1500
    H = _dense_hessian(net, work.batches)
    # Llama's RMSNorm computes in float32 whatever the dtype (transformers' choice): its float64
    # Hessian is exact to float32 rounding, GPT-2's to float64 rounding.
    rel = 1e-6 if name == "llama" else 1e-12
    assert (H - H.T).abs().max() <= rel * H.abs().max()
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(op.n, 24, generator=gen, dtype=torch.float64)
    got, want = op.matmat(V), H @ V
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-6 * scale and scale > 1e-3
    top = lanczos_top(op, 3, tol=1e-10, max_steps=300, generator=gen)
    exact = torch.linalg.eigvalsh(H).flip(0)[:3]
    assert np.allclose(top.eigenvalues, exact.numpy(), rtol=1e-6, atol=1e-9)


def test_token_loss_matches_cross_entropy_to_second_order() -> None:
    """The lean loss against torch's cross-entropy: values, gradients and Hessian-vector
    products (double backward), with ignored positions and unequal weights (float64)."""
    from landscape_cli.token_loss import TokenTargets, token_cross_entropy

    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (3, 5), generator=gen)
    labels[0, 4] = labels[2, 2:] = IGNORE
    weight = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64)
    t = TokenTargets(labels, weight)

    def plain(z):
        keep = labels != IGNORE
        ce = torch.nn.functional.cross_entropy(
            z[keep], labels[keep], reduction="none"
        )  # fmt: skip
        return (ce * weight[:, None].expand(3, 5)[keep]).sum()

    assert torch.allclose(token_cross_entropy(z, t), plain(z), rtol=1e-14)
    u = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)
    got = []
    for fn in (lambda z: token_cross_entropy(z, t), plain):
        (g,) = torch.autograd.grad(fn(z), z, create_graph=True)
        (hu,) = torch.autograd.grad(g, z, grad_outputs=u)
        got.append((g, hu))
    (g_lean, hu_lean), (g_plain, hu_plain) = got
    torch.testing.assert_close(g_lean, g_plain, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(hu_lean, hu_plain, rtol=1e-12, atol=1e-14)
    assert hu_plain.abs().max() > 1e-2
    torch.autograd.gradcheck(lambda z: token_cross_entropy(z, t), (z,))
    torch.autograd.gradgradcheck(lambda z: token_cross_entropy(z, t), (z,))


def test_graph_keeps_one_logits_sized_tensor(lms: Path) -> None:
    """What the first-order graph of a Hessian-vector product keeps: torch's cross-entropy keeps
    three tensors of the logits' size (log-softmax, its gradient, the logits' gradient); the
    lean loss keeps one (the logits' gradient, which the output layer's backward needs anyway)."""
    from landscape_cli.losses import LOSSES
    from landscape_cli.token_loss import _flat

    work = _work(lms / "gpt2", lms / "t.txt")
    b = work.batches[0]
    params = [p for p in work.model.parameters()]

    def plain(out, target):
        z, y, c = _flat(out, target)
        return (torch.nn.functional.cross_entropy(z, y, reduction="none") * c).sum()

    counts = {}
    for name, fn in (("plain", plain), ("lean", LOSSES["ce"])):
        storages: dict[int, tuple] = {}
        size = b.inputs["input_ids"].numel() * len(work.model.net.lm_head.weight)

        def pack(t, storages=storages, size=size):
            if t.numel() == size:
                storages[t.untyped_storage().data_ptr()] = tuple(t.shape)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = fn(work.model(b.inputs), b.targets)
            grads = torch.autograd.grad(loss, params, create_graph=True)
        counts[name] = len(storages)
        del grads, loss
    assert counts == {"plain": 3, "lean": 1}, counts


def test_pack_gives_the_documented_blocks(lms: Path) -> None:
    """``pack``: the texts' encodings joined by EOS, cut into blocks of seq_len, tail dropped;
    ``samples`` counts blocks; blocks need no padding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lms / "gpt2", local_files_only=True)
    stream = []
    for i, line in enumerate(LINES):
        stream += ([tok.eos_token_id] if i else []) + tok(line)["input_ids"]
    work = _work(lms / "gpt2", lms / "t.txt", pack=True, seq_len=7, batch_size=4)
    blocks = torch.cat([b.inputs["input_ids"] for b in work.batches]).tolist()
    assert blocks == [stream[s : s + 7] for s in range(0, len(stream) - 6, 7)]
    assert len(stream) % 7 != 0 and work.samples == len(stream) // 7
    for b in work.batches:
        assert bool((b.inputs["attention_mask"] == 1).all())
        assert b.targets.labels[:, :-1].tolist() == b.inputs["input_ids"][:, 1:].tolist()
        assert bool((b.targets.labels[:, -1] == IGNORE).all())
    some = _work(lms / "gpt2", lms / "t.txt", pack=True, seq_len=7, samples=3, seed=4)
    again = _work(lms / "gpt2", lms / "t.txt", pack=True, seq_len=7, samples=3, seed=4)
    chosen = torch.cat([b.inputs["input_ids"] for b in some.batches]).tolist()
    assert some.samples == 3 and all(c in blocks for c in chosen)
    assert some.samples_sha256 == again.samples_sha256 != work.samples_sha256


def test_sequences_are_the_tokenizers_own_encoding(lms: Path) -> None:
    """Without ``pack``: one sequence per non-blank line, the tokenizer's encoding (Llama's adds
    its BOS, GPT-2's nothing) truncated to seq_len; padding on the right, masked; the labels
    are the next tokens."""
    from transformers import AutoTokenizer

    (lms / "blank.txt").write_text("\n".join([LINES[0], "", "   ", *LINES[1:]]) + "\n")
    for name in ("gpt2", "llama"):
        tok = AutoTokenizer.from_pretrained(lms / name, local_files_only=True)
        work = _work(lms / name, lms / "blank.txt", seq_len=5)
        rows = []
        for b in work.batches:
            for ids, mask, y in zip(b.inputs["input_ids"], b.inputs["attention_mask"],
                                    b.targets.labels, strict=True):  # fmt: skip
                n = int(mask.sum())
                assert bool((mask[:n] == 1).all()) and bool((ids[n:] == tok.pad_token_id).all())
                assert y[: n - 1].tolist() == ids[1:n].tolist()
                assert bool((y[n - 1 :] == IGNORE).all())
                rows.append(ids[:n].tolist())
        assert rows == [tok(line)["input_ids"][:5] for line in LINES]
        assert (rows[0][0] == tok.bos_token_id) == (name == "llama")


def test_columns_of_tables_and_saved_datasets(lms: Path, tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    frame = pd.DataFrame({"body": LINES, "n": range(len(LINES))})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "t.parquet")
    datasets.Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "saved"))
    want = _work(lms / "gpt2", lms / "t.txt")
    for name in ("t.csv", "t.jsonl", "t.parquet", "saved"):
        got = _work(lms / "gpt2", tmp_path / name, text_columns=("body",))
        assert got.samples_sha256 == want.samples_sha256, name
    with pytest.raises(LandscapeError, match="no column 'text'"):
        _work(lms / "gpt2", tmp_path / "t.csv")


def test_per_layer_blocks(lms: Path, tmp_path: Path) -> None:
    from landscape_cli.hessian import HessianOperator

    make_gpt2(tmp_path / "untied", tie=False)
    want = {
        "gpt2": ["embeddings", "net.transformer.h.0", "net.transformer.h.1", "head"],
        "llama": ["embeddings", "net.model.layers.0", "net.model.layers.1", "head"],
        "neox": ["embeddings", "net.gpt_neox.layers.0", "net.gpt_neox.layers.1", "head"],
    }
    cases = [(lms / name, want[name]) for name in want] + [(tmp_path / "untied", want["gpt2"])]
    for folder, names in cases:
        work = _work(folder, lms / "t.txt", samples=4)
        op = HessianOperator(work.model, work.batches)
        blocks = op.blocks()
        assert [b[0] for b in blocks] == names
        sizes = {name: stop - start for name, start, stop in blocks}
        net = work.model.net
        emb = net.get_input_embeddings().weight.numel()
        tied = net.get_output_embeddings().weight is net.get_input_embeddings().weight
        assert sizes["embeddings"] >= emb
        head = sizes["head"] - (0 if tied else net.get_output_embeddings().weight.numel())
        last = ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm")
        final_norm = [p for k, p in net.named_parameters() if k.startswith(last)]
        assert head == sum(p.numel() for p in final_norm) > 0


def _cli(*args) -> tuple[int, str, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.slow
def test_cli_hessian_scan_and_audit(lms: Path, tmp_path: Path) -> None:
    """hessian --per-layer, a random scan whose centre is the model's loss, and an audit, on a
    GPT-2 folder and a text file."""
    from landscape_cli.losses import LOSSES, loss_and_accuracy

    folder = lms / "gpt2"
    out = tmp_path / "r.h5"
    data = ["--dataset", f"text:{lms / 't.txt'}", "--samples", "8", "--batch-size", "4"]
    code, stdout, stderr = _cli(
        "hessian", folder, "--top-k", "2", "--trace-probes", "4", "--density-probes", "0",
        "--per-layer", "--json", "--out", out, *data,
    )  # fmt: skip
    assert code == 0, stderr
    got = json.loads(stdout.strip().splitlines()[-1])
    assert set(got["per_layer"]) == {"embeddings", "net.transformer.h.0", "net.transformer.h.1",
                                     "head"}  # fmt: skip
    assert got["eigenvalues"][0] >= got["eigenvalues"][1] > 0
    work = _work(folder, lms / "t.txt", samples=8, batch_size=4)
    want, _ = loss_and_accuracy(work.model, work.batches, LOSSES["ce"])
    code, _, stderr = _cli("scan", folder, "--points", "5", "--out", out, *data)
    assert code == 0, stderr
    with h5py.File(out) as f:
        loss = f["scan/1d-random"]["loss"][()]
    assert loss[2] == pytest.approx(want, rel=1e-6) and np.isfinite(loss).all()
    code, stdout, stderr = _cli(
        "audit", folder, "--top-k", "1", "--trace-probes", "2", "--density-probes", "0",
        "--json", *data,
    )  # fmt: skip
    assert code == 0, stderr


@pytest.mark.slow
def test_scan_to_another_finetune_of_a_tied_model(lms: Path, tmp_path: Path) -> None:
    """``--to`` between two fine-tunes whose output layer is tied to the embeddings: the ends
    of the interpolation are the two models' own losses (the tied tensor moves once)."""
    from landscape_cli.losses import LOSSES, loss_and_accuracy

    out = tmp_path / "r.h5"
    data = ["--dataset", f"text:{lms / 't.txt'}", "--samples", "6"]
    code, _, stderr = _cli("scan", lms / "gpt2", "--to", lms / "gpt2b", "--points", "3",
                           "--range", "0", "1", "--out", out, *data)  # fmt: skip
    assert code == 0, stderr
    with h5py.File(out) as f:
        loss = f["scan/1d-interpolation"]["loss"][()]
    ends = []
    for name in ("gpt2", "gpt2b"):
        work = _work(lms / name, lms / "t.txt", samples=6, batch_size=128)
        ends.append(loss_and_accuracy(work.model, work.batches, LOSSES["ce"])[0])
    assert ends[0] != pytest.approx(ends[1], rel=1e-3)
    assert loss[0] == pytest.approx(ends[0], rel=1e-6)
    assert loss[-1] == pytest.approx(ends[1], rel=1e-6)


def _refusals():
    def masked_lm(d: Path) -> None:
        cfg = json.loads((d / "gpt2" / "config.json").read_text())
        cfg["architectures"] = ["BertForMaskedLM"]
        (d / "gpt2" / "config.json").write_text(json.dumps(cfg))

    def seq2seq(d: Path) -> None:
        cfg = json.loads((d / "gpt2" / "config.json").read_text())
        cfg["architectures"] = ["T5ForConditionalGeneration"]
        (d / "gpt2" / "config.json").write_text(json.dumps(cfg))

    def remote_code(d: Path) -> None:
        cfg = json.loads((d / "gpt2" / "config.json").read_text())
        cfg["architectures"] = ["EvilForCausalLM"]
        cfg["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM"}
        (d / "gpt2" / "config.json").write_text(json.dumps(cfg))
        (d / "gpt2" / "evil.py").write_text(
            f"open({str(d / 'RAN')!r}, 'w').write('x')\nEvilForCausalLM = None\n"
        )

    def no_pad(d: Path) -> None:
        shutil.rmtree(d / "gpt2")
        make_gpt2(d / "gpt2", make_lm_tokenizer(pad=False))

    def empty(d: Path) -> None:
        (d / "t.txt").write_text("\n  \n\n")

    def nothing(d: Path) -> None:
        (d / "t.txt").write_bytes(b"")

    def one_word_lines(d: Path) -> None:
        (d / "t.txt").write_text("cat\ndog\n")

    def not_utf8(d: Path) -> None:
        (d / "t.txt").write_bytes(b"the cat \xff\xfe sat\n")

    return {
        "masked_lm": (masked_lm, [], "masked language model"),
        "seq2seq": (seq2seq, [], "sequence-to-sequence"),
        "remote_code": (remote_code, [], "EvilForCausalLM"),
        "no_pad": (no_pad, [], "no padding token"),
        "empty": (empty, [], "holds no text"),
        "nothing": (nothing, [], "holds no text"),
        "one_word": (one_word_lines, [], "no next token"),
        "not_utf8": (not_utf8, [], "not UTF-8"),
        "seq_len_1": (None, ["--seq-len", "1"], "--seq-len must be >= 2"),
        "seq_len_big": (None, ["--seq-len", "33"], "beyond the 32 positions"),
        "pack_short": (None, ["--pack", "--seq-len", "32"], "fewer than one block"),
        "two_columns": (None, ["--text-column", "a", "--text-column", "b"], "one text column"),
        "mse": (None, ["--loss", "mse"], "next-token cross-entropy"),
        "image_data": (None, ["--dataset", "digits"], "--dataset text:FILE"),
    }


@pytest.mark.parametrize("command", ["hessian", "scan", "audit"])
@pytest.mark.parametrize("case", list(_refusals()))
def test_refusals_are_one_line(lms: Path, tmp_path: Path, case: str, command: str) -> None:
    shutil.copytree(lms / "gpt2", tmp_path / "gpt2")
    shutil.copy(lms / "t.txt", tmp_path / "t.txt")
    setup, extra, words = _refusals()[case]
    if case == "pack_short":
        write_lines(tmp_path / "t.txt", LINES[:2])
    if setup is not None:
        setup(tmp_path)
    args = [command, tmp_path / "gpt2", "--dataset", f"text:{tmp_path / 't.txt'}", *extra]
    if command != "scan":
        args += ["--top-k", "1", "--trace-probes", "0", "--density-probes", "0"]
    code, stdout, stderr = _cli(*args)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert words in lines[0], lines[0]
    assert not (tmp_path / "RAN").exists() and not (tmp_path / "gpt2.h5").exists()


def test_padding_needs_no_pad_token_when_nothing_is_padded(tmp_path: Path) -> None:
    """A tokenizer without a pad token is refused only when a batch must be padded: ``pack``,
    and sequences of one length, need none."""
    make_gpt2(tmp_path / "m", make_lm_tokenizer(pad=False))
    write_lines(tmp_path / "t.txt")
    write_lines(tmp_path / "same.txt", ["the cat sat", "a dog ran", "my cat sang"])
    assert _work(tmp_path / "m", tmp_path / "t.txt", pack=True, seq_len=8).samples > 0
    assert _work(tmp_path / "m", tmp_path / "same.txt").samples == 3
    with pytest.raises(LandscapeError, match="no padding token"):
        _work(tmp_path / "m", tmp_path / "t.txt")


def test_lm_options_are_refused_elsewhere(tmp_path: Path) -> None:
    make_bert(tmp_path / "bert")
    write_csv(tmp_path / "d.csv")
    for kw in ({"seq_len": 16}, {"pack": True}):
        with pytest.raises(LandscapeError, match="causal language models"):
            _work(tmp_path / "bert", tmp_path / "d.csv", **kw)


def _dense_ggn_and_fisher(net, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """G = Σ_s J_sᵀ (∂²L/∂z_s²) J_s and F = (1/N) Σ_s g_s g_sᵀ of a causal LM, built
    independently: each unpadded sequence's logits' Jacobian by torch.func.jacrev, the output
    Hessian of the mean next-token cross-entropy over all predicted tokens by torch.func.hessian,
    and g_s the gradient of sequence s's own mean token loss."""
    from torch.func import functional_call, hessian, jacrev

    names = [k for k, _ in net.named_parameters()]
    params = {k: p.detach() for k, p in net.named_parameters()}
    sizes = [params[k].numel() for k in names]
    flat = torch.cat([params[k].reshape(-1) for k in names])
    seqs = [
        ids[mask.bool()]
        for b in batches
        for ids, mask in zip(b.inputs["input_ids"], b.inputs["attention_mask"], strict=True)
    ]
    count = sum(len(s) - 1 for s in seqs)

    def logits(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ps = {k: p.reshape(params[k].shape) for k, p in zip(names, v.split(sizes), strict=True)}
        return functional_call(net, ps, (), {"input_ids": s[None], "use_cache": False}).logits[0]

    n = flat.numel()
    G = torch.zeros(n, n, dtype=torch.float64)
    F = torch.zeros(n, n, dtype=torch.float64)
    for s in seqs:
        z = logits(flat, s)
        J = jacrev(logits)(flat, s).reshape(z.numel(), n)

        def share(
            zz, s=s, shape=z.shape
        ):  # this sequence's part of the mean over all predicted tokens
            ce = torch.nn.functional.cross_entropy(zz.reshape(shape)[:-1], s[1:], reduction="sum")
            return ce / count

        Hz = hessian(share)(z.reshape(-1))
        G += J.T @ Hz @ J

        def own(v, s=s):  # the sequence's own loss: the mean over its predicted tokens
            return torch.nn.functional.cross_entropy(logits(v, s)[:-1], s[1:])

        g = torch.func.grad(own)(flat)
        F += torch.outer(g, g) / len(seqs)
    return G, F


@pytest.mark.slow
def test_ggn_and_fisher_of_a_language_model_equal_their_dense_matrices(tmp_path: Path) -> None:
    """`--curvature ggn` and `fisher` on a tiny GPT-2 with padded batches (float64): the
    operators against G and F built independently, every product to 1e-8 of the largest entry,
    and the top eigenvalues to 1e-6; both positive semi-definite."""
    from landscape_cli.hessian import curvature_operator, lanczos_top

    make_gpt2(tmp_path / "g", hidden=4, positions=16, tie=False)
    write_lines(tmp_path / "t.txt")
    work = _work(tmp_path / "g", tmp_path / "t.txt", samples=6, batch_size=4)
    net = work.model.net.double()
    G, F = _dense_ggn_and_fisher(net, work.batches)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(G.shape[0], 12, generator=gen, dtype=torch.float64)
    for name, M in (("ggn", G), ("fisher", F)):
        op = curvature_operator(name, work.model, work.batches, dtype=torch.float64)
        assert op.n == M.shape[0]
        got, want = op.matmat(V), M @ V
        assert (got - want).abs().max() <= 1e-8 * want.abs().max(), name
        exact = torch.linalg.eigvalsh(M)
        assert exact.min() >= -1e-10 * exact.max(), name  # positive semi-definite
        top = lanczos_top(op, 3, tol=1e-10, max_steps=300, generator=gen)
        np.testing.assert_allclose(top.eigenvalues, exact.flip(0)[:3].numpy(), rtol=1e-6)
