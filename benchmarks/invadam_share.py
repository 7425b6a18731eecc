"""How large DualAdam's InvAdam term is next to its Adam term, along a real training run.

Usage: python benchmarks/invadam_share.py [--switch-rate 8e-5] [--lr 1e-2] [--steps 300]

Trains the digits CNN with DualAdam and prints ||α m̂⊙√v̂|| / ||(1−α) m̂/(√v̂+ε)|| over all
parameters at a few steps. When the ratio is small, DualAdam's step is (1−α)·Adam's step: Adam
with a linear learning-rate warm-up over 1/ξ steps, which is the baseline to compare it against.
"""

from __future__ import annotations

import argparse
import math

import torch

from dualadam import DualAdam, switch_alpha
from landscape_cli.data import load_dataset
from landscape_cli.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switch-rate", type=float, default=8e-5)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=data.input_shape, num_classes=data.num_classes)
    opt = DualAdam(model.parameters(), lr=args.lr, switch_rate=args.switch_rate)
    beta1, beta2 = opt.defaults["betas"]
    eps = opt.defaults["eps"]
    report = {1, 10, 100, args.steps}
    gen = torch.Generator().manual_seed(0)
    step = 0
    print(f"step  alpha    |InvAdam term| / |Adam term|   (cnn on digits, lr {args.lr:g})")
    while step < args.steps:
        loader = torch.utils.data.DataLoader(
            data.dataset, batch_size=128, shuffle=True, generator=gen
        )
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
            if step in report:
                alpha = switch_alpha(step, args.switch_rate)
                inv = adam = 0.0
                for p in model.parameters():
                    s = opt.state[p]
                    m_hat = s["exp_avg"] / (1 - beta1**step)
                    sqrt_v_hat = (s["exp_avg_sq"] / (1 - beta2**step)).sqrt()
                    inv += (alpha * m_hat * sqrt_v_hat).square().sum().item()
                    adam += ((1 - alpha) * m_hat / (sqrt_v_hat + eps)).square().sum().item()
                print(f"{step:>4}  {alpha:.4f}  {math.sqrt(inv / adam):.2e}")
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
