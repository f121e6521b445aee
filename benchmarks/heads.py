"""Time one training step (forward + loss + backward) of every head against two baselines measured in the same run.

    python benchmarks/heads.py                       # B 256, D 512, C 10,000 and 100,000, 2 threads
    python benchmarks/heads.py --classes 10000 --repeats 30 --markdown docs/benchmarks.md

Baselines: the *floor* — ``x @ W.T`` + cross-entropy with no normalisation — and *normlinear* — normalised features
and weights (in-graph), scaled, + cross-entropy with no margin. Each head is timed in interleaved rounds with the
floor (floor, head, floor, head, ...) so slow drifts of a noisy machine hit both; the ratio is the median of the
per-round ratios, printed with its first and third quartiles over the rounds (the spread a re-run falls in),
and the table also prints the medians themselves. ``subcenter_arcface`` is compared with a floor
K times wider (C·K columns), as its cost is dominated by the C·K-wide matmul.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import facesphere as fs  # noqa: E402

# targets of the issue: ratio to the floor
TARGETS = {
    "cosface": 1.2, "arcface": 1.2, "combined": 1.2, "sphereface": 1.2, "sphereface_r v0": 1.2,
    "sphereface_r v1": 1.2, "sphereface_r v2": 1.3, "sface": 1.3, "sphereface2": 1.3, "subcenter_arcface": 1.2,
}

CASES = [
    ("softmax", {}), ("normface", {}), ("cosface", {}), ("arcface", {}), ("combined", {}),
    ("subcenter_arcface", {}), ("sphereface", {}), ("sphereface_plus", {}),
    ("sphereface_r v0", {"margin": "v0", "m": 1.5}), ("sphereface_r v1", {"margin": "v1", "m": 1.5}),
    ("sphereface_r v2", {}), ("sphereface2", {}), ("sface", {}),
]


class Floor(torch.nn.Module):
    def __init__(self, dim: int, classes: int, normalised: bool, s: float = 64.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.normalised, self.s = normalised, s

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.normalised:
            logits = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t() * self.s
        else:
            logits = x @ self.weight.t()
        return F.cross_entropy(logits, y)


def step_time(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    xg = x.detach().requires_grad_(True)
    start = time.perf_counter()
    out = module(xg, y)
    loss = out if isinstance(out, torch.Tensor) else out.loss
    loss.backward()
    return time.perf_counter() - start


def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (the spread printed beside a median); both the value itself for one value."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def measure(module, baseline, x, y, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Interleaved timing: median head / baseline seconds, the median per-round ratio and its quartiles."""
    for _ in range(warmup):
        step_time(module, x, y)
        step_time(baseline, x, y)
    head_times, base_times, ratios = [], [], []
    for _ in range(repeats):
        b = step_time(baseline, x, y)
        h = step_time(module, x, y)
        head_times.append(h)
        base_times.append(b)
        ratios.append(h / b)
    q1, q3 = quartiles(ratios)
    return {"head": statistics.median(head_times), "base": statistics.median(base_times),
            "ratio": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3}


def run(classes: int, batch: int, dim: int, repeats: int, only: list[str] | None = None) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(batch, dim)
    y = torch.randint(0, classes, (batch,))
    floor = Floor(dim, classes, normalised=False)
    rows = []
    m = measure(Floor(dim, classes, normalised=True), floor, x, y, repeats)
    rows.append({"head": "floor (x·Wᵀ + CE)", "ms": 1000 * m["base"], "ratio": 1.0, "spread": None, "target": None})
    rows.append({"head": "normlinear (no margin)", "ms": 1000 * m["head"], "ratio": m["ratio"],
                 "spread": (m["ratio_q1"], m["ratio_q3"]), "target": None})
    wide_floor = None
    for label, options in CASES:
        if only and label not in only and label.split()[0] not in only:
            continue
        name = label.split()[0]
        head = fs.build_head(name, embed_dim=dim, num_classes=classes, **options)
        baseline = floor
        if name == "subcenter_arcface":
            wide_floor = wide_floor or Floor(dim, classes * head.subcenters, normalised=False)
            baseline = wide_floor
        m = measure(head, baseline, x, y, repeats)
        rows.append({"head": label, "ms": 1000 * m["head"], "ratio": m["ratio"],
                     "spread": (m["ratio_q1"], m["ratio_q3"]), "target": TARGETS.get(label)})
        print(f"  C={classes:>7,} {label:<22} {1000 * m['head']:9.1f} ms  x{m['ratio']:5.2f} "
              f"({m['ratio_q1']:.2f}-{m['ratio_q3']:.2f})", file=sys.stderr)
    return rows


def table(results: dict[int, list[dict]]) -> str:
    sizes = sorted(results)
    header = "| head | " + " | ".join(f"C = {c:,}: ms | ratio (quartiles)" for c in sizes) + " | target |"
    sep = "|---|" + "---:|---:|" * len(sizes) + "---:|"
    lines = [header, sep]
    for i, row in enumerate(results[sizes[0]]):
        cells = []
        target = row["target"]
        for c in sizes:
            r = results[c][i]
            # ✗: misses even at its first quartile; ~: the median misses, the spread reaches the target
            flag = "" if target is None or r["ratio"] <= target else \
                (" ~" if r["spread"] and r["spread"][0] <= target else " ✗")
            spread = f" ({r['spread'][0]:.2f}–{r['spread'][1]:.2f})" if r["spread"] else ""
            cells.append(f"{r['ms']:.1f} | {r['ratio']:.2f}{spread}{flag}")
        lines.append(f"| {row['head']} | " + " | ".join(cells) + f" | {'' if target is None else f'≤ {target}'} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=31, help="interleaved rounds per head (median and quartiles "
                                                               "of the per-round ratios)")
    parser.add_argument("--heads", nargs="+", help="only these rows (labels as in the table, e.g. arcface cosface)")
    parser.add_argument("--markdown", type=Path, help="also write the table into this markdown file's heads section")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {c: run(c, args.batch, args.dim, args.repeats, args.heads) for c in args.classes}
    text = (
        f"One training step (forward + loss + backward), fp32, CPU, B = {args.batch}, D = {args.dim}; "
        f"median of {args.repeats} interleaved rounds; ratio = head / floor in the same round, its first and third "
        f"quartiles over the rounds in brackets (✗: misses its target even at the first quartile; ~: the median "
        f"misses, the spread reaches it); `python benchmarks/heads.py --repeats {args.repeats}` repeats it.\n"
        f"Machine: {machine()}.\n\n" + table(results)
    )
    print(text)
    if args.markdown:
        write_section(args.markdown, "heads", text)
    return 0


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appending the section if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = path.read_text() if path.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        content = before + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + ("\n\n" if content else "") + block + "\n"
    path.write_text(content)


if __name__ == "__main__":
    raise SystemExit(main())
