"""A held-out verification split of a training set (``facesphere data split``): whole identities (or whole groups of
identities, e.g. families) kept out of training, and verification pairs made from them.

Hyper-parameters are chosen on data the test set never sees: hold out about ``fraction`` of the identities that have
2+ images, drawn as whole groups at random (``group``: a regular expression whose first group names an identity's
group, e.g. ``^(F\\d+)_`` for Families in the Wild; default: each identity its own group), deal the groups to
``folds`` folds (greedily, balancing identities with 2+ images), and make ``pairs_per_fold`` genuine pairs (two images
of one identity, identities visited round-robin so that large ones do not dominate, no pair twice) and as many
impostor pairs per fold (two identities of the fold; with groups, ``same_group`` of them between members of one group:
relatives are the hard case). No identity and no group crosses folds.

Writes ``OUT/heldout_pairs.txt`` (an OpenSphere pair list, ``label path0 path1`` with absolute paths, fold after fold,
every fold exactly ``2 * pairs_per_fold`` lines, so ``pairs:`` reads back these folds), ``OUT/heldout_identities.txt``
(every held-out identity, one name per line: train with ``--data.exclude`` on it) and ``OUT/summary.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, InvalidOptionError
from ..files import atomic_write_text
from .datasets import build_dataset, read_identity_list

__all__ = ["make_heldout_split"]


def _group_of(pattern: str | None) -> Any:
    if pattern is None:
        return lambda name: name
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InvalidOptionError(f"--group {pattern!r} is not a regular expression ({error})") from None
    if regex.groups < 1:
        raise InvalidOptionError(f"--group {pattern!r} needs a capture group naming the identity's group")

    def group(name: str) -> str:
        match = regex.search(name)
        return match.group(1) if match else name

    return group


def make_heldout_split(spec: str, out_dir: str | os.PathLike[str], *, exclude: Sequence[str] = (),
                       fraction: float = 0.1, group: str | None = None, folds: int = 10, pairs_per_fold: int = 300,
                       same_group: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Hold out identities of ``spec`` (a folder / list / RecordIO set) and write verification pairs (see the module
    docstring). ``exclude``: files of identity names left out entirely (e.g. the test-set overlap). Returns the
    summary written to ``OUT/summary.json``."""
    if not 0.0 < fraction < 1.0:
        raise InvalidOptionError(f"--fraction must be in (0, 1), got {fraction}")
    if folds < 2 or pairs_per_fold < 2 or pairs_per_fold % 2:
        raise InvalidOptionError("--folds must be >= 2 and --pairs-per-fold an even number >= 2")
    if not 0.0 <= same_group <= 1.0:
        raise InvalidOptionError(f"--same-group must be in [0, 1], got {same_group}")
    dataset = build_dataset(spec)
    paths = getattr(dataset, "paths", None)
    if paths is None:
        raise InvalidOptionError(f"{spec}: pairs name image files; use an image folder or a list file (unpack a "
                                 "RecordIO set with facesphere data unpack)")
    excluded = {name for file in exclude for name in read_identity_list(file)}
    images: dict[str, list[str]] = defaultdict(list)
    for path, label in zip(paths, np.asarray(dataset.labels)):
        name = dataset.classes[int(label)]
        if name not in excluded:
            images[name].append(str(Path(path).resolve()))
    group_of = _group_of(group)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(images):
        groups[group_of(name)].append(name)
    multi = [name for name in images if len(images[name]) >= 2]
    target = max(1, round(fraction * len(multi)))
    rng = np.random.default_rng(seed)
    held: list[str] = []
    count = 0
    for key in rng.permutation(sorted(groups)):
        if count >= target:
            break
        k = sum(len(images[name]) >= 2 for name in groups[key])
        if k:
            held.append(str(key))
            count += k
    fold_of: dict[str, int] = {}
    load = np.zeros(folds, dtype=int)
    for key in sorted(held, key=lambda g: (-sum(len(images[n]) >= 2 for n in groups[g]), g)):
        k = int(np.argmin(load))
        fold_of[key] = k
        load[k] += sum(len(images[n]) >= 2 for n in groups[key])
    lines: list[str] = []
    fold_stats = []
    for k in range(folds):
        members = [name for key in held if fold_of[key] == k for name in groups[key]]
        genuine = _genuine_pairs(members, images, pairs_per_fold // 2, rng)
        if len(genuine) < pairs_per_fold // 2:
            raise DataError(f"{spec}: fold {k} can make only {len(genuine)} genuine pairs of the "
                            f"{pairs_per_fold // 2} asked for; hold out more identities (--fraction) or ask for "
                            "fewer pairs (--pairs-per-fold)")
        impostor, n_same = _impostor_pairs(members, images, groups, group_of, pairs_per_fold // 2,
                                           same_group if group else 0.0, rng)
        if len(impostor) < pairs_per_fold // 2:
            raise DataError(f"{spec}: fold {k} has too few identities for {pairs_per_fold // 2} impostor pairs")
        lines += [f"1 {a} {b}" for a, b in genuine] + [f"0 {a} {b}" for a, b in impostor]
        fold_stats.append({"groups": sum(1 for key in held if fold_of[key] == k), "identities": len(members),
                           "genuine": len(genuine), "impostor_same_group": n_same,
                           "impostor_other_group": len(impostor) - n_same})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_names = sorted(name for key in held for name in groups[key])
    atomic_write_text(out / "heldout_pairs.txt", "\n".join(lines) + "\n", what="pair list")
    atomic_write_text(out / "heldout_identities.txt", "".join(n + "\n" for n in held_names), what="identity list")
    summary = {
        "spec": str(spec), "seed": seed, "fraction": fraction, "group": group, "folds": folds,
        "pairs_per_fold": pairs_per_fold, "excluded_by_lists": len(excluded & set(dataset.classes)),
        "identities": len(images), "identities_2plus": len(multi),
        "heldout_groups": len(held), "heldout_identities": len(held_names),
        "heldout_images": sum(len(images[n]) for n in held_names),
        "training_identities": len(images) - len(held_names),
        "training_images": sum(len(v) for n, v in images.items() if n not in set(held_names)),
        "fold_stats": fold_stats,
        "files": {"pairs": "heldout_pairs.txt", "identities": "heldout_identities.txt"},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2), what="split summary")
    return summary


def _genuine_pairs(members: list[str], images: dict[str, list[str]], wanted: int,
                   rng: np.random.Generator) -> list[tuple[str, str]]:
    pools = {}
    for name in members:
        n = len(images[name])
        if n >= 2:
            combos = [(a, b) for a in range(n) for b in range(a + 1, n)]
            pools[name] = [combos[j] for j in rng.permutation(len(combos))]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < wanted and any(pools.values()):
        for name in rng.permutation(sorted(pools)):
            if pools[name] and len(pairs) < wanted:
                a, b = pools[name].pop()
                pairs.append((images[name][a], images[name][b]))
    return pairs


def _impostor_pairs(members: list[str], images: dict[str, list[str]], groups: dict[str, list[str]], group_of: Any,
                    wanted: int, same_group: float, rng: np.random.Generator) -> tuple[list[tuple[str, str]], int]:
    chosen: set[tuple[str, str]] = set()
    relatives = [(a, b) for key in {group_of(m) for m in members} for i, a in enumerate(groups[key])
                 for b in groups[key][i + 1:]]
    n_same = min(round(same_group * wanted), len(relatives) * 50) if relatives else 0
    tries = 0
    while len(chosen) < n_same and tries < 50 * wanted:
        tries += 1
        a, b = relatives[int(rng.integers(len(relatives)))]
        chosen.add((str(rng.choice(images[a])), str(rng.choice(images[b]))))
    n_same = len(chosen)
    tries = 0
    while len(chosen) < wanted and tries < 200 * wanted and len(members) >= 2:
        tries += 1
        a, b = rng.choice(members, 2, replace=False)
        if group_of(a) == group_of(b):
            continue
        chosen.add((str(rng.choice(images[a])), str(rng.choice(images[b]))))
    return sorted(chosen, key=lambda _: rng.random()), n_same
