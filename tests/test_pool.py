"""The nodes' logic that needs no ComfyUI: budgets from node inputs, candidate chains, the resident
checkpoint cache, pool reports and the sweep's job list."""

import pytest

from cost_aware_router.decision.budget import BEST, BUDGET_MODES, DEFAULT, HOLD, TARGET, WEIGHT, Budget
from cost_aware_router.errors import RouterError
from cost_aware_router.pool import (
    CandidatePool,
    ResidentCache,
    candidate_entry,
    chain_candidates,
    default_label,
    describe,
    sweep_jobs,
)


@pytest.mark.parametrize("mode, value, cap, force, expected", [
    (DEFAULT, 3.0, 0.0, "", Budget()),
    (TARGET, 2.5, 0.0, "", Budget(budget=2.5)),
    (HOLD, 2.5, 0.0, "", Budget(budget=2.5)),
    (WEIGHT, 0.1, 0.0, "", Budget(cost_weight=0.1)),
    (BEST, 9.0, 0.0, "", Budget(best_quality=True)),
    (TARGET, 2.5, 4.0, "  ", Budget(budget=2.5, max_cost=4.0)),
    (DEFAULT, 1.0, 0.0, " sdxl ", Budget(force="sdxl")),
])
def test_budget_from_node_inputs(mode, value, cap, force, expected):
    assert Budget.from_mode(mode, value, cap, force) == expected


def test_budget_modes_are_the_nodes_options():
    assert BUDGET_MODES == (DEFAULT, TARGET, HOLD, WEIGHT, BEST) and len(set(BUDGET_MODES)) == 5
    with pytest.raises(RouterError, match="unknown budget mode 'cheap'"):
        Budget.from_mode("cheap", 1.0)


def _entry(label, ckpt="a.safetensors", steps=20, cost=0.0):
    return candidate_entry(label, ckpt, steps, 7.0, "euler", "normal", cost)


def test_candidate_chain():
    chain = chain_candidates(None, _entry(" fast ", steps=4, cost=0.5))
    chain = chain_candidates(chain, _entry("slow", "b.safetensors", 50))
    assert [c["label"] for c in chain] == ["fast", "slow"]
    assert chain[0]["cost"] == 0.5 and chain[1]["cost"] is None  # 0 = the router file's cost
    assert describe(chain[0]) == "fast: a.safetensors, 4 steps, cfg 7, euler/normal, 0.5 s/image"
    with pytest.raises(RouterError, match="label 'fast' is used twice"):
        chain_candidates(chain, _entry("fast"))
    with pytest.raises(RouterError, match="label is empty"):
        _entry("  ")
    # a Candidate Setup left without a label is named by its settings
    assert default_label("SDXL/sd_xl_base_1.0.safetensors", 20, 7.0, "euler") == "sd_xl_base_1.0-20steps-cfg7-euler"
    assert default_label("v1-5.ckpt", 8, 4.5, "dpmpp_2m", "karras") == "v1-5-8steps-cfg4.5-dpmpp_2m-karras"
    with pytest.raises(RouterError, match="cost of 'x' must be a finite number >= 0, got -1"):
        _entry("x", cost=-1.0)


class _Loader:
    def __init__(self):
        self.loaded, self.unloaded = [], []

    def load(self, key):
        self.loaded.append(key)
        return (f"model:{key}", f"clip:{key}", f"vae:{key}")

    def unload(self, key, models):
        assert models[0] == f"model:{key}"
        self.unloaded.append(key)


def test_resident_cache_loads_once_and_evicts_least_recently_used():
    io = _Loader()
    cache = ResidentCache(io.load, io.unload)
    for key in ["a", "b", "a", "b", "a"]:
        assert cache.get(key)[0] == f"model:{key}"
    assert io.loaded == ["a", "b"] and cache.loads == {"a": 1, "b": 1}
    cache.get("b", capacity=2)
    cache.get("c", capacity=2)  # a is the least recently used
    assert io.unloaded == ["a"] and cache.resident() == ["b", "c"]
    cache.get("a", capacity=1)
    assert io.unloaded == ["a", "b", "c"] and cache.resident() == ["a"] and cache.loads["a"] == 2


def test_pool_loads_by_label_and_reports_only_its_own_checkpoints():
    io = _Loader()
    cache = ResidentCache(io.load, io.unload)
    cache.get("other.safetensors")  # loaded by another workflow
    pool = CandidatePool([_entry("fast", "a.safetensors", 4), _entry("slow", "a.safetensors", 50),
                          _entry("xl", "b.safetensors", 30, cost=6.0)], 0, cache)
    assert pool.labels == ["fast", "slow", "xl"] and pool.checkpoints == ["a.safetensors", "b.safetensors"]
    assert pool.costs() == {"xl": 6.0}
    assert pool.load("slow")[0] == "model:a.safetensors" and pool.load("fast")[0] == "model:a.safetensors"
    assert io.loaded == ["other.safetensors", "a.safetensors"]
    report = pool.report("after this decision").splitlines()  # the one pool report (pool and router nodes)
    assert report == ["2 checkpoint(s), 3 candidates; loaded after this decision:",
                      "  a.safetensors: loaded (1 load so far)",
                      "  b.safetensors: not loaded (loads when the router first chooses it)",
                      "also loaded in this ComfyUI for other workflows: other.safetensors"]
    measured = pool.with_costs({"fast": 0.2})
    assert measured.costs() == {"fast": 0.2, "xl": 6.0} and measured.candidates["fast"]["measured_seconds"] == 0.2
    assert pool.costs() == {"xl": 6.0}  # the original pool is unchanged
    with pytest.raises(RouterError, match="no candidates connected"):
        CandidatePool([], 0, cache)


def test_pool_preload_respects_max_resident():
    io = _Loader()
    pool = CandidatePool([_entry("x", "a"), _entry("y", "b"), _entry("z", "c")], 2, ResidentCache(io.load, io.unload))
    seen = []
    assert pool.preload(lambda done, total: seen.append((done, total))) == ["a", "b"]
    assert io.loaded == ["a", "b"] and seen == [(1, 2), (2, 2)]


def test_sweep_jobs_skip_what_is_done_in_a_stable_order():
    cands = {"fast": _entry("fast"), "slow": _entry("slow")}
    jobs = sweep_jobs(["p1", "p2"], 2, 10, cands, done={("p1", "slow", 10), ("p2", "fast", 11)})
    assert [(j["prompt"], j["seed"], j["label"]) for j in jobs] == [
        ("p1", 10, "fast"), ("p1", 11, "fast"), ("p1", 11, "slow"), ("p2", 10, "fast"), ("p2", 10, "slow"),
        ("p2", 11, "slow")]
    assert jobs[0]["steps"] == 20 and jobs[0]["checkpoint"] == "a.safetensors"
    assert sweep_jobs(["p1"], 1, 0, cands, done={("p1", "fast", 0), ("p1", "slow", 0)}) == []
