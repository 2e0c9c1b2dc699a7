"""Demo on the embedded default: the real all-MiniLM-L6-v2 teacher and the builtin corpus.

Builds the rewired supernet, prints the search space, samples subnets with their
costs, exports one and reloads it with `transformers.AutoModel`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr
from transformers import AutoModel, AutoTokenizer

import metanas
from metanas.supernet.calibration import builtin_batch
from metanas.teachers import default_teacher_path


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].float()
    return (hidden * m).sum(1) / m.sum(1)


def similarity_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of two embedding sets' pairwise cosine similarities (any widths)."""
    def sims(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.normalize(x, dim=-1)
        s = x @ x.T
        return s[torch.triu_indices(len(x), len(x), 1).unbind()]

    return float(spearmanr(sims(a).numpy(), sims(b).numpy()).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--teacher", default=None, help="teacher directory or hub id (default: bundled MiniLM)")
    parser.add_argument("--out", default=None, help="export directory (default: a temporary directory)")
    parser.add_argument("--samples", type=int, default=5, help="subnets to sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    teacher = args.teacher or default_teacher_path()
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    sn = metanas.ElasticBert.from_teacher(teacher, rewire=True)
    space = sn.space
    print(f"teacher: {teacher}")
    print(f"supernet built and rewired in {time.perf_counter() - t0:.1f}s")
    print(f"search space: {space.size():,} archs")
    for name in ("depth_choices", "hidden_choices", "head_choices", "ffn_choices"):
        print(f"  {name}: {list(getattr(space, name))}")
    largest = space.largest()
    print(f"largest: {space.params(largest):,} params, {space.flops(largest, 128) / 1e6:.1f} MFLOPs/token @128")

    tokenizer = AutoTokenizer.from_pretrained(teacher)
    batch = builtin_batch(tokenizer, n=32, split="validation")
    with torch.inference_mode():
        ref = mean_pool(sn(**batch, arch=largest).last_hidden_state, batch["attention_mask"])
    rng = random.Random(args.seed)
    print("\nsampled subnets (Spearman of pairwise embedding similarities vs the teacher, inherited weights):")
    archs = [space.sample(rng) for _ in range(args.samples)]
    for arch in archs:
        with torch.inference_mode():
            emb = mean_pool(sn(**batch, arch=arch).last_hidden_state, batch["attention_mask"])
        print(f"  {arch.to_json()}\n    params {space.params(arch):,}  "
              f"MFLOPs/token {space.flops(arch, 128) / 1e6:.1f}  spearman {similarity_spearman(emb, ref):.3f}")

    arch = archs[0]
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="metanas-demo-")) / "model"
    metanas.export(sn, arch, out_dir, overwrite=True)
    print(f"\nexported {arch.to_json()} to {out_dir}")
    model = AutoModel.from_pretrained(out_dir, trust_remote_code=True).eval()
    with torch.inference_mode():
        got = model(**batch).last_hidden_state
        want = sn(**batch, arch=arch).last_hidden_state
    n = sum(p.numel() for p in model.parameters())
    print(f"reloaded with AutoModel as {type(model).__name__}: {n:,} params "
          f"(formula {space.params(arch):,}), max |exported - supernet| = {(got - want).abs().max():.2e}")
    print(f"files: {sorted(p.name for p in out_dir.iterdir())}")


if __name__ == "__main__":
    main()
