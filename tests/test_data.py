import json
import math
import struct
import zlib

import numpy as np
import pytest
from conftest import DATA, write_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_aware_router.errors import DataError
from cost_aware_router.scored import PNG_KEY, load_dataset, png_text_chunks, read_records

ROW = {"prompt": "a cat", "candidate": "fast", "score": 3.0, "cost": 0.5}


def test_real_table_loads_with_expected_shape():
    ds = load_dataset(DATA / "agiqa_3k")
    assert ds.quality.shape == (300, 5)
    assert set(ds.candidates) == {"sd15-50", "sd15-10", "sd15-50-lowcfg", "sd15-50-highcfg", "sdxl-50"}
    assert ds.cost[ds.candidates.index("sd15-10")] == pytest.approx(0.318)
    assert ds.configs["sd15-10"]["steps"] == 10
    # 10 rows out of 1500 have no score? no: AGIQA has every SD config for every prompt
    assert ds.complete.all()
    align = load_dataset(DATA / "agiqa_3k", metric="mos_align")
    assert not np.allclose(align.quality, ds.quality)


def test_rows_for_one_pair_are_averaged_over_seeds(tmp_path):
    rows = [dict(ROW, score=s, seed=i) for i, s in enumerate([1.0, 2.0, 6.0])] + [
        dict(ROW, candidate="slow", score=4.0, cost=2.0)]
    ds = load_dataset(write_rows(tmp_path, rows))
    assert ds.quality[0, ds.candidates.index("fast")] == pytest.approx(3.0)
    assert ds.counts[0, ds.candidates.index("fast")] == 3


def test_scores_dict_and_metric_choice(tmp_path):
    rows = [dict(ROW, scores={"clip": 30.0}), dict(ROW, candidate="b", scores={"clip": 31.0})]
    ds = load_dataset(write_rows(tmp_path, rows), metric="clip")
    assert ds.quality.tolist() == [[30.0, 31.0]]
    with pytest.raises(DataError, match="no row has metric 'pick'.*clip"):
        load_dataset(tmp_path, metric="pick")


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a", "candidate": "x", "score": 1', "malformed JSON"),
    ('{"candidate": "x", "score": 1, "cost": 1}', "missing field 'prompt'"),
    ('{"prompt": "a", "candidate": "x", "cost": 1}', "missing field 'score'"),
    ('{"prompt": "a", "candidate": "x", "score": NaN, "cost": 1}', "'score' must be a finite number, got nan"),
    ('{"prompt": "a", "candidate": "x", "score": Infinity, "cost": 1}', "'score' must be a finite number, got inf"),
    ('{"prompt": "a", "candidate": "x", "score": "high", "cost": 1}', "'score' must be a finite number, got \"high\""),
    ('{"prompt": "a", "candidate": "x", "score": 1, "cost": -0.5}', "'cost' must be a finite number >= 0, got -0.5"),
    ('{"prompt": "a", "candidate": "", "score": 1, "cost": 1}', "non-empty string"),
    ('{"prompt": 5, "candidate": "x", "score": 1, "cost": 1}', "'prompt' must be a string"),
    ('[1, 2, 3]', "expected a JSON object"),
    ('{"prompt": "a", "candidate": "x", "score": 1, "cost": 1, "scores": {"m": null}}', "scores.m"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    write_rows(tmp_path, [ROW, line])
    with pytest.raises(DataError, match=message) as err:
        load_dataset(tmp_path)
    assert "generations.jsonl:2" in str(err.value)
    ds = load_dataset(tmp_path, skip_bad=True)
    assert ds.skipped == 1 and len(ds.prompts) == 1


def test_non_utf8_line(tmp_path):
    (tmp_path / "generations.jsonl").write_bytes(json.dumps(ROW).encode() + b'\n{"prompt": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"generations.jsonl:2: not valid UTF-8"):
        load_dataset(tmp_path)


def test_truncated_last_line(tmp_path):
    (tmp_path / "generations.jsonl").write_text(json.dumps(ROW) + "\n" + json.dumps(ROW)[:20])
    with pytest.raises(DataError, match=":2: malformed JSON"):
        load_dataset(tmp_path)


def test_missing_empty_and_file_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="holds no scored generations"):
        load_dataset(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(f)
    write_rows(tmp_path / "empty", [])
    with pytest.raises(DataError, match="holds no scored generations"):
        load_dataset(tmp_path / "empty")


def _png_with_text(path, key, text, itxt=False):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x80")
    if itxt:
        meta = chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))
    else:
        meta = chunk(b"tEXt", key.encode() + b"\x00" + text.encode("latin-1"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + meta + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_pngs_describe_themselves(tmp_path):
    _png_with_text(tmp_path / "a.png", PNG_KEY, json.dumps(ROW))
    _png_with_text(tmp_path / "b.png", PNG_KEY, json.dumps(dict(ROW, candidate="slow", prompt="ünïcode")), itxt=True)
    _png_with_text(tmp_path / "c.png", "parameters", "not ours")
    records, bad = read_records(tmp_path)
    assert bad == 0 and sorted(r.candidate for r in records) == ["fast", "slow"]
    assert png_text_chunks(tmp_path / "b.png")[PNG_KEY].startswith("{")
    # a PNG already listed in generations.jsonl is not counted twice
    write_rows(tmp_path, [dict(ROW, image="a.png", score=5.0)])
    records, _ = read_records(tmp_path)
    assert len(records) == 2 and sorted(r.score for r in records) == [3.0, 5.0]


def test_png_with_bad_record(tmp_path):
    _png_with_text(tmp_path / "a.png", PNG_KEY, '{"prompt": "x"}')
    with pytest.raises(DataError, match="a.png: missing field 'candidate'"):
        read_records(tmp_path)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p1", "p2", "ünï", ""]), st.sampled_from(["a", "b", "c"]), finite,
                          st.floats(min_value=0, max_value=100)), min_size=1, max_size=30))
def test_reader_property_means_match(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("prop")
    write_rows(folder, [{"prompt": p, "candidate": c, "score": s, "cost": k} for p, c, s, k in rows])
    ds = load_dataset(folder)
    for p, c in {(p, c) for p, c, _, _ in rows}:
        expect = np.mean([s for pp, cc, s, _ in rows if (pp, cc) == (p, c)])
        got = ds.quality[ds.prompts.index(p), ds.candidates.index(c)]
        assert math.isclose(got, expect, rel_tol=1e-9, abs_tol=1e-6)
    assert (ds.cost >= 0).all()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_reader_never_crashes_on_garbage(tmp_path_factory, blob):
    folder = tmp_path_factory.mktemp("garbage")
    (folder / "generations.jsonl").write_bytes(blob)
    try:
        load_dataset(folder)
    except DataError as exc:
        assert str(exc)
