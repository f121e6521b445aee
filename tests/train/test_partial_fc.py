"""Partial FC: sharding / sampling vectors (docs/methods.md §6.6), single-process equality with the plain head, and 2 Gloo
processes against the single-process head on the concatenated global batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facesphere import build_head
from facesphere.errors import InvalidOptionError, UnknownNameError
from facesphere.train.distributed import DistInfo, spawn_gloo
from facesphere.train.partial_fc import (
    PartialFC,
    distributed_cross_entropy,
    num_sampled,
    remap_labels,
    sample_classes,
    shard_range,
)

CPU = torch.device("cpu")
WORLD, B, D, C = 2, 4, 6, 7  # 2 ranks x 4 rows, 7 classes -> shards of 4 and 3
LR = 0.1
CASES = [
    ("arcface", {}),
    ("cosface", {}),
    ("sphereface_r", {}),
    ("subcenter_arcface", {}),
    ("sphereface_r", {"feature_norm": "soft"}),  # the soft-FN penalty on the gathered norms
    ("sphereface", {}),  # no feature normalisation, true gradient, λ schedule
]
UNEVEN = [slice(0, 3), slice(3, 8)]
SAMPLED_C, SAMPLED_RATE = 40, 0.25  # shards of 20, 5 classes sampled per rank and step


def _case_data(head: str, options: dict, classes: int = C, iterations: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = build_head(head, D, classes, **options).subcenters
    weight = torch.randn(classes * k, D, generator=g)
    batches = []
    for _ in range(iterations):
        x = torch.randn(WORLD * B, D, generator=g) * (1 + torch.rand(WORLD * B, 1, generator=g))
        batches.append((x, torch.randint(0, classes, (WORLD * B,), generator=g)))
    return weight, batches


def _sampled_labels():
    # iteration 0: few positives per shard (random negatives fill up to 5); iteration 1: 6 positives on rank 0's
    # shard (more than the 5-class budget: exactly the positives are used)
    return [torch.tensor([0, 25, 3, 39, 3, 21, 12, 30]), torch.tensor([0, 1, 2, 3, 4, 5, 25, 5])]


def _rows(rank: int) -> slice:
    return slice(rank * B, (rank + 1) * B)


# ----------------------------------------------------------------------------------------------------------------
def _dist_worker(info: DistInfo) -> dict:
    rank, out = info.rank, {}
    # 1. ρ = 1 with the shards of a full weight, two SGD steps
    for case, (head, options) in enumerate(CASES):
        weight, batches = _case_data(head, options)
        pfc = PartialFC(head, D, C, dist=info, **options)
        pfc.load_full_weight(weight)
        if case == 0:
            out["gathered_weight"] = pfc.gather_full_weight()
        steps = []
        for x, y in batches:
            emb = x[_rows(rank)].clone().requires_grad_()
            res = pfc(emb, y[_rows(rank)])
            res.loss.backward()
            steps.append({"loss": res.loss.detach(), "weight_grad": pfc.head.weight.grad.clone(),
                          "emb_grad": emb.grad.clone()})
            with torch.no_grad():
                pfc.head.weight.sub_(LR * pfc.head.weight.grad)
            pfc.head.weight.grad = None
        out[f"case{case}"] = steps
        full = pfc.full_head()
        if rank == 0:
            assert full is not None and full.num_classes == C and int(full.step) == 2
            out[f"full{case}"] = full.weight.detach().clone()
        else:
            assert full is None
    # 2. DDP backbone + PartialFC: backbone gradients after DDP averaging
    weight, [(x, y)] = _case_data("arcface", {}, iterations=1, seed=1)
    torch.manual_seed(7)
    model = DistributedDataParallel(nn.Linear(D, D))
    pfc = PartialFC("arcface", D, C, dist=info)
    pfc.load_full_weight(weight)
    pfc(model(x[_rows(rank)]), y[_rows(rank)]).loss.backward()
    out["ddp"] = {"weight": model.module.weight.grad.clone(), "bias": model.module.bias.grad.clone(),
                  "head": pfc.head.weight.grad.clone()}
    # 2b. unequal per-rank batches: rank 0 holds 3 rows, rank 1 holds 5
    weight, [(x, y)] = _case_data("cosface", {}, iterations=1, seed=4)
    pfc = PartialFC("cosface", D, C, dist=info)
    pfc.load_full_weight(weight)
    emb = x[UNEVEN[rank]].clone().requires_grad_()
    res = pfc(emb, y[UNEVEN[rank]])
    res.loss.backward()
    out["uneven"] = {"loss": res.loss.detach(), "weight_grad": pfc.head.weight.grad.clone(),
                     "emb_grad": emb.grad.clone()}
    # 3. ρ < 1: sampled classes, positives kept
    weight, batches = _case_data("arcface", {}, classes=SAMPLED_C, iterations=2, seed=2)
    pfc = PartialFC("arcface", D, SAMPLED_C, SAMPLED_RATE, dist=info, seed=3)
    pfc.load_full_weight(weight)
    sampled = []
    for (x, _), y in zip(batches, _sampled_labels()):
        emb = x[_rows(rank)].clone().requires_grad_()
        res = pfc(emb, y[_rows(rank)])
        res.loss.backward()
        sampled.append({"loss": res.loss.detach(), "index": pfc.last_index + pfc.start,
                        "used": int(res.extras["classes_used"]), "weight_grad": pfc.head.weight.grad.clone(),
                        "emb_grad": emb.grad.clone()})
        pfc.head.weight.grad = None
    out["sampled"] = sampled
    return out


@pytest.fixture(scope="module")
def dist_results():
    return spawn_gloo(_dist_worker, WORLD)


def _reference(head: str, options: dict, weight: torch.Tensor, batches) -> list[dict]:
    ref = build_head(head, D, weight.shape[0] // build_head(head, D, 1, **options).subcenters, **options)
    with torch.no_grad():
        ref.weight.copy_(weight)
    steps = []
    for x, y in batches:
        emb = x.clone().requires_grad_()
        res = ref(emb, y)
        res.loss.backward()
        steps.append({"loss": res.loss.detach(), "weight_grad": ref.weight.grad.clone(), "emb_grad": emb.grad})
        with torch.no_grad():
            ref.weight.sub_(LR * ref.weight.grad)
        ref.weight.grad = None
    steps.append({"weight": ref.weight.detach().clone()})
    return steps


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
def test_shard_range_vectors():
    assert [shard_range(10, 3, r) for r in range(3)] == [(0, 4), (4, 3), (7, 3)]
    shards = [shard_range(93_431, 8, r) for r in range(8)]
    assert [n for _, n in shards] == [11_679] * 7 + [11_678]
    assert shards[7][0] == 81_753
    assert all(start + n == nxt for (start, n), (nxt, _) in zip(shards, shards[1:]))
    assert shard_range(5, 1, 0) == (0, 5)


def test_num_sampled_vectors():
    assert [num_sampled(n, 0.5) for n in (4, 3, 3)] == [2, 1, 1]
    assert num_sampled(11_679, 0.1) == 1_167 and num_sampled(11_678, 0.1) == 1_167
    assert num_sampled(7, 1.0) == 7


def test_shard_range_errors():
    with pytest.raises(InvalidOptionError, match="every rank needs at least one class"):
        shard_range(3, 4, 0)
    with pytest.raises(InvalidOptionError):
        shard_range(10, 2, 2)
    with pytest.raises(InvalidOptionError):
        shard_range(0, 1, 0)


def test_sample_classes_keeps_every_positive_sorted_unique():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        n_local = 30
        labels = torch.randint(-1, n_local, (12,), generator=g)
        positives = set(labels[labels >= 0].tolist())
        n_sample = int(torch.randint(len(positives), n_local + 1, (1,), generator=g))
        index = sample_classes(labels, n_local, n_sample, g)
        assert index.dtype == torch.int64 and index.numel() == n_sample
        assert torch.equal(index, torch.unique(index))  # sorted, no duplicates
        assert positives <= set(index.tolist())
        assert 0 <= int(index.min()) and int(index.max()) < n_local


def test_sample_classes_budget_smaller_than_positives_gives_exactly_them():
    labels = torch.tensor([5, 1, 1, -1, 7, 3])
    assert sample_classes(labels, 10, 2, torch.Generator().manual_seed(0)).tolist() == [1, 3, 5, 7]
    assert sample_classes(labels, 10, 4, torch.Generator().manual_seed(0)).tolist() == [1, 3, 5, 7]
    assert sample_classes(labels, 10, 99).tolist() == list(range(10))  # clipped to the shard


def test_sample_classes_negatives_are_random_and_reproducible():
    labels = torch.tensor([2, 5, -1])
    seen = set()
    for seed in range(200):
        index = sample_classes(labels, 10, 4, torch.Generator().manual_seed(seed))
        assert torch.equal(index, sample_classes(labels, 10, 4, torch.Generator().manual_seed(seed)))
        seen |= set(index.tolist()) - {2, 5}
    assert seen == {0, 1, 3, 4, 6, 7, 8, 9}


def test_sample_classes_rejects_out_of_range_labels():
    with pytest.raises(InvalidOptionError, match="out of range"):
        sample_classes(torch.tensor([0, 12]), 10, 5)


def test_remap_labels():
    index = torch.tensor([1, 4, 6, 9])
    labels = torch.tensor([4, -1, 9, 1, 6, 5])
    assert remap_labels(labels, index).tolist() == [1, -1, 3, 0, 2, -1]
    assert remap_labels(labels, torch.tensor([], dtype=torch.long)).tolist() == [-1] * 6


def test_distributed_cross_entropy_matches_cross_entropy_in_one_process():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 9, generator=g, dtype=torch.float64) * 30).requires_grad_()
    labels = torch.randint(0, 9, (6,), generator=g)
    ref = logits.detach().clone().requires_grad_()
    loss = distributed_cross_entropy(logits, labels, distributed=False)
    expected = F.cross_entropy(ref, labels)
    (2 * loss).backward()
    (2 * expected).backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits.grad, ref.grad, rtol=1e-12, atol=1e-12)
    # fp32 logits: computed and differentiated in fp32
    logits32 = logits.detach().float().requires_grad_()
    distributed_cross_entropy(logits32, labels).backward()
    assert logits32.grad.dtype == torch.float32
    torch.testing.assert_close(logits32.grad, ref.grad.float() / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "head,options",
    CASES + [("sphereface_plus", {}), ("combined", {}), ("normface", {}), ("softmax", {})],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()) or "default",
)
def test_single_process_rate_one_is_the_plain_head(head, options):
    torch.manual_seed(0)
    ref = build_head(head, D, C, **options)
    torch.manual_seed(0)
    pfc = PartialFC(head, D, C, **options)
    assert torch.equal(pfc.head.weight, ref.weight)  # same init under the global RNG
    assert (pfc.start, pfc.n_local, pfc.dist.world_size) == (0, C, 1)
    _, batches = _case_data(head, options, iterations=3)
    for x, y in batches:
        e1, e2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        r1, r2 = ref(e1, y), pfc(e2, y, return_logits=True)
        r1.loss.backward()
        r2.loss.backward()
        assert torch.equal(r1.loss, r2.loss)
        assert torch.equal(r1.logits, r2.logits)
        assert torch.equal(ref.weight.grad, pfc.head.weight.grad)
        assert torch.equal(e1.grad, e2.grad)
        assert r2.extras["classes_used"] == C
        for key, value in r1.extras.items():
            assert torch.equal(value, r2.extras[key])
        with torch.no_grad():
            ref.weight.sub_(LR * ref.weight.grad)
            pfc.head.weight.sub_(LR * pfc.head.weight.grad)
        ref.weight.grad = pfc.head.weight.grad = None
    assert int(ref.step) == int(pfc.head.step) == 3


@pytest.mark.parametrize("head", ["arcface", "sphereface_r", "subcenter_arcface"])
def test_single_process_sampling_is_the_head_on_the_sampled_classes(head):
    classes = 20
    weight, batches = _case_data(head, {}, classes=classes, iterations=3)
    pfc = PartialFC(head, D, classes, 0.3, seed=5)
    pfc.load_full_weight(weight)
    k = pfc.head.subcenters
    for x, y in batches:
        emb = x.clone().requires_grad_()
        out = pfc(emb, y)
        out.loss.backward()
        index = pfc.last_index
        assert set(y.tolist()) <= set(index.tolist())
        assert index.numel() == max(num_sampled(classes, 0.3), len(set(y.tolist())))
        assert int(out.extras["classes_used"]) == index.numel()
        rows = (index.unsqueeze(1) * k + torch.arange(k)).reshape(-1)
        ref = build_head(head, D, index.numel())
        with torch.no_grad():
            ref.weight.copy_(pfc.head.weight[rows])  # (in-place WN heads: already normalised by the forward)
        ref_emb = x.clone().requires_grad_()
        ref_out = ref(ref_emb, remap_labels(y, index))
        ref_out.loss.backward()
        _close(out.loss, ref_out.loss)
        _close(emb.grad, ref_emb.grad)
        _close(pfc.head.weight.grad[rows], ref.weight.grad)
        others = torch.ones(classes * k, dtype=torch.bool)
        others[rows] = False
        assert torch.count_nonzero(pfc.head.weight.grad[others]) == 0  # non-sampled centres get no gradient
        pfc.head.weight.grad = None
    pfc.eval()
    with torch.no_grad():
        assert int(pfc(batches[0][0], batches[0][1]).extras["classes_used"]) == classes  # no sampling in eval


def test_sampling_is_reproducible_from_the_seed():
    _, batches = _case_data("arcface", {}, classes=50, iterations=3)

    def run(seed):
        pfc = PartialFC("arcface", D, 50, 0.2, seed=seed)
        indices = []
        for x, y in batches:
            pfc(x, y)
            indices.append(pfc.last_index.tolist())
        return indices

    first = run(1)
    assert first == run(1)
    assert first != run(2)
    assert first[0] != first[1]  # a new draw every step


@pytest.mark.parametrize("head", ["sface", "sphereface2"])
def test_non_softmax_heads_are_refused(head):
    with pytest.raises(InvalidOptionError, match="softmax cross-entropy head"):
        PartialFC(head, D, C)


def test_invalid_options():
    for rate in (0, 0.0, 1.5, -0.1, True, "0.5"):
        with pytest.raises(InvalidOptionError, match="sample_rate"):
            PartialFC("arcface", D, C, rate)
    with pytest.raises(UnknownNameError):
        PartialFC("no_such_head", D, C)
    with pytest.raises(InvalidOptionError, match="at least one class"):
        PartialFC("arcface", D, 3, dist=DistInfo(0, 4, 0, CPU, "gloo"))
    pfc = PartialFC("arcface", D, C)
    with pytest.raises(InvalidOptionError, match=r"\(B, 6\)"):
        pfc(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InvalidOptionError, match="labels"):
        pfc(torch.randn(4, D), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InvalidOptionError, match=r"\(7, 6\)"):
        pfc.load_full_weight(torch.randn(8, D))


def test_shards_without_collectives_and_state_dict():
    # shard layout from a DistInfo alone (no forward, so no process group is needed)
    shards = [PartialFC("subcenter_arcface", D, 10, dist=DistInfo(r, 3, r, CPU, "gloo")) for r in range(3)]
    assert [(p.start, p.n_local, tuple(p.head.weight.shape)) for p in shards] == [
        (0, 4, (12, D)), (4, 3, (9, D)), (7, 3, (9, D))]
    assert not torch.equal(shards[1].head.weight, shards[2].head.weight)  # per-rank init
    full = torch.randn(30, D)
    for p in shards:
        p.load_full_weight(full)
    assert torch.equal(torch.cat([p.head.weight.detach() for p in shards]), full)
    with pytest.raises(InvalidOptionError, match="init_distributed"):
        shards[0](torch.randn(2, D), torch.tensor([0, 1]))
    state = shards[1].state_dict()
    assert torch.equal(state["head.weight"], full[12:21])
    again = PartialFC("subcenter_arcface", D, 10, dist=DistInfo(1, 3, 1, CPU, "gloo"))
    again.load_state_dict(state)
    assert torch.equal(again.head.weight, shards[1].head.weight)
    with pytest.raises(InvalidOptionError, match="rank 1 of 3"):
        shards[2].load_state_dict(state)  # same shape, other classes


def test_single_process_full_head_and_gather():
    pfc = PartialFC("cosface", D, C, m=0.4)
    assert torch.equal(pfc.gather_full_weight(), pfc.head.weight.detach())
    head = pfc.full_head()
    assert head.num_classes == C and torch.equal(head.weight, pfc.head.weight)
    assert head.margin.m == 0.4


# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{h}-{o}" for h, o in CASES])
def test_two_processes_rate_one_equals_the_full_head(dist_results, case):
    head, options = CASES[case]
    weight, batches = _case_data(head, options)
    ref = _reference(head, options, weight, batches)
    for step, expected in enumerate(ref[:-1]):
        got = [res[f"case{case}"][step] for res in dist_results]
        for res in got:  # the global-batch loss on every rank
            _close(res["loss"], expected["loss"])
        _close(torch.cat([res["weight_grad"] for res in got]), expected["weight_grad"])
        # documented scaling: the embedding gradient is world_size × the single-process one (DDP then averages)
        _close(torch.cat([res["emb_grad"] for res in got]) / WORLD, expected["emb_grad"])
    _close(dist_results[0][f"full{case}"], ref[-1]["weight"])  # full_head() after two SGD steps


@pytest.mark.slow
def test_two_processes_gather_full_weight(dist_results):
    weight, _ = _case_data(*CASES[0])
    assert torch.equal(dist_results[0]["gathered_weight"], weight)
    assert dist_results[1]["gathered_weight"] is None


@pytest.mark.slow
def test_two_processes_ddp_backbone_gradient_is_single_process(dist_results):
    weight, [(x, y)] = _case_data("arcface", {}, iterations=1, seed=1)
    torch.manual_seed(7)
    model = nn.Linear(D, D)
    head = build_head("arcface", D, C)
    with torch.no_grad():
        head.weight.copy_(weight)
    head(model(x), y).loss.backward()
    for res in dist_results:
        _close(res["ddp"]["weight"], model.weight.grad)
        _close(res["ddp"]["bias"], model.bias.grad)
    _close(torch.cat([res["ddp"]["head"] for res in dist_results]), head.weight.grad)


@pytest.mark.slow
def test_two_processes_unequal_batch_sizes(dist_results):
    weight, batches = _case_data("cosface", {}, iterations=1, seed=4)
    [expected, _] = _reference("cosface", {}, weight, batches)
    got = [res["uneven"] for res in dist_results]
    assert [res["emb_grad"].shape[0] for res in got] == [3, 5]
    for res in got:
        _close(res["loss"], expected["loss"])
    _close(torch.cat([res["weight_grad"] for res in got]), expected["weight_grad"])
    _close(torch.cat([res["emb_grad"] for res in got]) / WORLD, expected["emb_grad"])


@pytest.mark.slow
def test_two_processes_sampling(dist_results):
    weight, batches = _case_data("arcface", {}, classes=SAMPLED_C, iterations=2, seed=2)
    n_sample = num_sampled(SAMPLED_C // WORLD, SAMPLED_RATE)
    for step, ((x, _), y) in enumerate(zip(batches, _sampled_labels())):
        got = [res["sampled"][step] for res in dist_results]
        assert torch.isfinite(got[0]["loss"]) and torch.equal(got[0]["loss"], got[1]["loss"])
        union = torch.cat([res["index"] for res in got])
        for rank, res in enumerate(got):
            start = rank * SAMPLED_C // WORLD
            positives = {c for c in y.tolist() if start <= c < start + SAMPLED_C // WORLD}
            assert positives <= set(res["index"].tolist())
            assert res["used"] == res["index"].numel() == max(n_sample, len(positives))
            assert torch.equal(res["index"], torch.unique(res["index"]))
        if step == 1:
            assert got[0]["index"].tolist() == [0, 1, 2, 3, 4, 5]  # 6 positives > 5: exactly them
        # the distributed loss is the plain head on the union of the sampled classes
        ref = build_head("arcface", D, union.numel())
        with torch.no_grad():
            ref.weight.copy_(weight[union])
        emb = x.clone().requires_grad_()
        out = ref(emb, remap_labels(y, union))
        out.loss.backward()
        _close(got[0]["loss"], out.loss)
        _close(torch.cat([res["emb_grad"] for res in got]) / WORLD, emb.grad)
        grads = torch.cat([res["weight_grad"] for res in got])
        _close(grads[union], ref.weight.grad)
        others = torch.ones(SAMPLED_C, dtype=torch.bool)
        others[union] = False
        assert torch.count_nonzero(grads[others]) == 0
