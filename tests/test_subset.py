"""Routing among any subset of a router's candidates (issue 19, part 3): the AGIQA-3K router from
tests/data restricted to some of its five candidates."""

import numpy as np
import pytest

from cost_aware_router.decision.budget import Budget
from cost_aware_router.errors import RouterError
from cost_aware_router.subset import restrict


def _reference_cost(view, target):
    """Average cost of the view's choices on its reference prompts' out-of-fold predictions at ``target``."""
    plan = view.plan(Budget(budget=target))
    ref = view.reference
    prompts = [f"reference prompt {i}" for i in range(len(ref.y))]
    picks, _ = plan.choose(view.predict_reference(), view.cost, prompts)
    return float(view.cost[picks].mean())


@pytest.mark.parametrize("labels, target, stale_misses", [(["sd15-10", "sdxl-50"], 3.0, False),
                                                          (["sd15-10", "sd15-50"], 1.0, True),
                                                          (["sd15-50-lowcfg", "sd15-10", "sdxl-50"], 2.0, False)])
def test_a_subset_is_recalibrated_so_a_target_budget_holds_on_it(agiqa_router, labels, target, stale_misses):
    view = restrict(agiqa_router, labels)
    assert view.names == [n for n in agiqa_router.names if n in labels]
    assert _reference_cost(view, target) == pytest.approx(target, rel=0.05)
    stale = view.copy()
    stale.calibration = agiqa_router.calibration  # the whole router's curve does not fit the subset
    if stale_misses:
        assert abs(_reference_cost(stale, target) / target - 1) > 0.05
    assert view.default_budget <= max(view.cost) and view.escalates is False


def test_a_subset_predicts_the_whole_routers_columns(agiqa_router, agiqa_split):
    view = restrict(agiqa_router, ["sdxl-50", "sd15-10"])
    E = agiqa_router.embedder.embed(agiqa_split[1].prompts[:20])
    full, _, _ = agiqa_router.predict_embedded(E)
    part, _, _ = view.predict_embedded(E)
    cols = [agiqa_router.names.index(n) for n in view.names]
    np.testing.assert_allclose(part, full[:, cols], rtol=1e-6)
    for d in view.route(agiqa_split[1].prompts[:20], Budget(best_quality=True)):
        assert d.candidate in view.names and set(d.cost) == set(view.names)


def test_one_candidate_is_always_chosen(agiqa_router):
    view = restrict(agiqa_router, ["sd15-50"])
    for b in (Budget(), Budget(budget=0.1), Budget(best_quality=True), Budget(cost_weight=5.0)):
        assert {d.candidate for d in view.route(["a cat", "a castle at night"], b)} == {"sd15-50"}


def test_a_view_is_never_written_to_a_file(agiqa_router, tmp_path):
    from cost_aware_router.errors import RouterFileError
    from cost_aware_router.router_file import save_router

    with pytest.raises(RouterFileError, match="is a view of some of a router's candidates"):
        save_router(restrict(agiqa_router, ["sd15-10", "sdxl-50"]), tmp_path / "v.safetensors")
    assert not (tmp_path / "v.safetensors").exists()


def test_all_candidates_is_the_router_itself_and_bad_labels_are_refused(agiqa_router):
    assert restrict(agiqa_router, list(reversed(agiqa_router.names))) is agiqa_router
    with pytest.raises(RouterError, match=r"candidate\(s\) \['nope'\] are not in the router"):
        restrict(agiqa_router, ["sd15-50", "nope"])
    with pytest.raises(RouterError, match="choose at least one of the router's candidates"):
        restrict(agiqa_router, [])
