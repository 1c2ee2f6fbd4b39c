"""Training that cannot produce a bad router silently (issue 19, part 1): folders whose candidates
were scored on different prompts or on two scales mixed under 'score' are refused with one message
that says what to do; constant scores are flagged. Real rows: the AGIQA-3K subset in tests/data."""

import json

import numpy as np
import pytest
from conftest import DATA, write_rows

from cost_aware_router.errors import DataError
from cost_aware_router.scored import load_dataset
from cost_aware_router.train import MIN_COMMON_PROMPTS, check_trainable

AGIQA = [json.loads(line) for line in (DATA / "agiqa_3k" / "generations.jsonl").read_text().splitlines()]


def _folder(tmp_path, extra):
    write_rows(tmp_path / "f", AGIQA + extra)
    return tmp_path / "f"


def _collected(prompts, candidates, scorer="clipscore", score=lambda i: 30.0 + i % 3):
    return [{"prompt": p, "candidate": c, "score": score(i), "cost": 1.0, "scores": {scorer: score(i)}}
            for i, p in enumerate(prompts) for c in candidates]


def test_two_scales_mixed_under_score_are_refused_naming_both(tmp_path):
    prompts = sorted({r["prompt"] for r in AGIQA})
    ds = load_dataset(_folder(tmp_path, _collected(prompts, ["mine-a", "mine-b"])))
    with pytest.raises(DataError) as info:
        check_trainable(ds)
    msg = str(info.value)
    assert "'score' mixes two scales" in msg and "'mos_quality'" in msg
    assert "['mine-a', 'mine-b'] with 'clipscore'" in msg


def test_candidates_scored_on_different_prompts_are_refused(tmp_path):
    rows = [r for r in AGIQA if r["candidate"] in ("sd15-50", "sdxl-50")]
    new = [{**r, "candidate": "sd15-10", "prompt": r["prompt"] + " (other set)"} for r in rows[:40]]
    write_rows(tmp_path / "g", rows + new)
    with pytest.raises(DataError, match=rf"only 0 prompt\(s\) are scored by every candidate .*'sd15-10' \d+\).* "
                                        rf"at least {MIN_COMMON_PROMPTS} prompts"):
        check_trainable(load_dataset(tmp_path / "g"))


def test_one_scale_and_a_common_core_train(tmp_path):
    prompts = sorted({r["prompt"] for r in AGIQA})
    same_scale = _collected(prompts[:50], ["mine"], scorer="mos_quality", score=lambda i: 2.0 + (i % 5) / 2)
    ds = check_trainable(load_dataset(_folder(tmp_path, same_scale)))
    assert int(ds.complete.sum()) == 50 and not ds.warnings


def test_constant_scores_are_flagged(tmp_path):
    prompts = sorted({r["prompt"] for r in AGIQA})
    flat = _collected(prompts, ["broken"], scorer="mos_quality", score=lambda i: 2.5)
    ds = check_trainable(load_dataset(_folder(tmp_path, flat)))
    assert any("every 'score' score of candidate 'broken' is 2.5" in w for w in ds.warnings)
    assert np.isfinite(ds.quality).all()
