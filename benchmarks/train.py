"""Training-step throughput and the cost of a million-identity head, measured in this run.

    python benchmarks/train.py                      # CPU: sfnet20 / iresnet50 steps, head at C = 1,000,000
    python benchmarks/train.py --markdown docs/benchmarks.md
    python benchmarks/train.py --device cuda --amp  # on a GPU: adds iresnet50 AMP images/s

Part 0 (``--formats``): the CPU number formats of a training step, the FIW recipe's backbone (narrow SFNet-20 with BN,
batch 128, ArcFace over 2,341 identities) and iresnet50: fp32, channels-last, bf16 autocast and both, measured in
interleaved rounds of the same run; ratio = images/s over fp32's.
Part 1: images/s of one full training step (forward, SphereFace-R / ArcFace head, backward, SGD step) of sfnet20 and
iresnet50 at a small batch. Part 2: the head alone (ArcFace, D = 512) at C = 1,000,000 identities, batch 64, with
Partial FC sampling rate ρ = 1.0 and 0.1: median step time (forward + backward + SGD step) and peak resident memory.
Each head case runs in its own process and resets the kernel's peak-RSS counter before building the head, so the\npeak (``VmHWM``) minus the resident memory at that point is what the case itself needed; the ρ = 1.0 case
is the baseline its ratio is taken against.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import facesphere as fs  # noqa: E402
from heads import machine, write_section  # noqa: E402


def time_steps(step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def backbone_throughput(name: str, batch: int, head: str, device: str, amp: bool, repeats: int) -> float:
    torch.manual_seed(0)
    backbone = fs.build_backbone(name, embed_dim=512).to(device)
    classifier = fs.build_head(head, embed_dim=512, num_classes=1000).to(device)
    params = list(backbone.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, 112, 112, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.float16, enabled=amp):
            embeddings = backbone(images)
        classifier(embeddings, labels).loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return batch / time_steps(step, repeats)


FORMATS = {"fp32": (False, False), "fp32 + channels-last": (True, False), "bf16 autocast": (False, True),
           "bf16 autocast + channels-last": (True, True)}


def format_throughput(name: str, options: dict, batch: int, classes: int, rounds: int, repeats: int) -> dict:
    """Images/s of the trainer's step (forward under autocast, ArcFace head in fp32, backward, SGD) per format.

    The four formats are timed round-robin (``rounds`` rounds of ``repeats`` steps each, median per format), so a
    change in the machine's load touches them alike."""
    steps = {}
    for label, (channels_last, bf16) in FORMATS.items():
        torch.manual_seed(0)
        backbone = fs.build_backbone(name, embed_dim=512, **options)
        head = fs.build_head("arcface", embed_dim=512, num_classes=classes)
        memory = torch.channels_last if channels_last else torch.contiguous_format
        backbone = backbone.to(memory_format=memory)
        optimizer = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
        images = torch.randn(batch, 3, 112, 112).contiguous(memory_format=memory)
        labels = torch.randint(0, classes, (batch,))

        def step(backbone=backbone, head=head, optimizer=optimizer, images=images, labels=labels, bf16=bf16):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                embeddings = backbone(images)
            head(embeddings.float(), labels).loss.backward()
            optimizer.step()

        step()  # warm-up (allocations, oneDNN kernel choice)
        steps[label] = step
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times[label].append(time.perf_counter() - start)
    return {label: batch / statistics.median(values) for label, values in times.items()}


def format_section(args) -> str:
    cases = (("sfnet20", {"channels": (32, 64, 128, 256), "batchnorm": True}, "SFNet-20 (32-64-128-256, BN)",
              args.format_batch),
             ("iresnet50", {}, "iResNet-50", max(args.format_batch // 4, 1)))
    lines = ["| backbone | batch | format | images/s | ratio to fp32 |", "|---|---:|---|---:|---:|"]
    for name, options, label, batch in cases:
        result = format_throughput(name, options, batch, 2341, args.rounds, args.repeats)
        print(label, result, file=sys.stderr)
        for fmt, ips in result.items():
            lines.append(f"| {label} | {batch} | {fmt} | {ips:.1f} | {ips / result['fp32']:.2f} |")
    return "\n".join([f"Machine: {machine()}. One training step (forward, ArcFace over 2,341 identities, backward, "
                       f"SGD); {args.rounds} interleaved rounds of {args.repeats} steps, median. The SFNet-20 is the "
                       "FIW recipe's backbone at its batch; iResNet-50 at a quarter of it.", ""] + lines)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux), so the peak is this case's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def head_case(classes: int, rate: float, batch: int, repeats: int) -> dict:
    """Run in a child process: median step time and peak RSS of a Partial FC ArcFace head."""
    from facesphere.train.partial_fc import PartialFC

    _reset_peak()
    base_rss = _status_kib("VmRSS")
    torch.manual_seed(0)
    head = PartialFC("arcface", 512, classes, sample_rate=rate)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 512)
    y = torch.randint(0, classes, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=False)
        head(x.detach().requires_grad_(True), y).loss.backward()
        optimizer.step()

    seconds = time_steps(step, repeats, warmup=1)
    peak = _status_kib("VmHWM")  # peak resident set since the reset, KiB
    return {"ms": 1000 * seconds, "peak_gib": peak / 2**20, "over_start_gib": (peak - base_rss) / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=1_000_000)
    parser.add_argument("--head-batch", type=int, default=64)
    parser.add_argument("--amp", action="store_true", help="also time iresnet50 with fp16 autocast (CUDA)")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--formats", action="store_true", help="only part 0: fp32 / channels-last / bf16 steps")
    parser.add_argument("--format-batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--head-case", nargs=2, metavar=("CLASSES", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.head_case:
        result = head_case(int(args.head_case[0]), float(args.head_case[1]), args.head_batch, args.repeats)
        print(json.dumps(result))
        return 0

    if args.formats:
        text = format_section(args)
        print(text)
        if args.markdown:
            write_section(args.markdown, "train-formats", text)
        return 0

    rows = []
    for name, head in (("sfnet20", "sphereface_r"), ("iresnet50", "arcface")):
        ips = backbone_throughput(name, args.batch, head, args.device, False, args.repeats)
        rows.append((f"{name} + {head}, batch {args.batch}, fp32", f"{ips:.1f} images/s"))
        print(rows[-1], file=sys.stderr)
    if args.amp and args.device.startswith("cuda"):
        ips = backbone_throughput("iresnet50", 128, "arcface", args.device, True, args.repeats)
        rows.append(("iresnet50 + arcface, batch 128, fp16 autocast", f"{ips:.1f} images/s"))

    head_rows = []
    baseline = None
    for rate in (1.0, 0.1):
        out = subprocess.run(
            [sys.executable, __file__, "--head-case", str(args.classes), str(rate), "--threads", str(args.threads),
             "--repeats", str(args.repeats), "--head-batch", str(args.head_batch)],
            check=True, capture_output=True, text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        baseline = baseline or result
        head_rows.append((rate, result, result["ms"] / baseline["ms"], result["over_start_gib"] / baseline["over_start_gib"]))
        print(head_rows[-1], file=sys.stderr)

    lines = [f"Machine: {machine()}, device {args.device}.", "", "| training step | throughput |", "|---|---:|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    lines += ["", f"ArcFace head alone, C = {args.classes:,}, D = 512, batch {args.head_batch} (Partial FC, one process; "
              "forward + backward + SGD step with momentum; peak RSS of a process running only this case):", "",
              "| sampling rate ρ | step ms | ratio | peak RSS GiB | memory above start GiB | ratio |",
              "|---:|---:|---:|---:|---:|---:|"]
    for rate, r, time_ratio, mem_ratio in head_rows:
        lines.append(f"| {rate} | {r['ms']:.0f} | {time_ratio:.2f} | {r['peak_gib']:.2f} | {r['over_start_gib']:.2f} | "
                     f"{mem_ratio:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        write_section(args.markdown, "train", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
