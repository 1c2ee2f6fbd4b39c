"""Robustness catalogue: bad inputs across the CLI, the file readers and the core the nodes use.

Every bad input must end in one clear line on stderr that names the problem (CLI: exit code 2,
no traceback, no "unexpected ..." fallback), with no output file created, replaced or left half
written, no stray temporary file and nothing lost from the folder around it. Empty and
100,000-character prompts must route.
"""

import functools
import hashlib
import json
import math
import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, ROOT, rewrite_router, run_cli, set_meta, write_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_aware_router import cli
from cost_aware_router.decision.budget import Budget
from cost_aware_router.errors import RouterError
from cost_aware_router.router_file import load_router
from cost_aware_router.storage.files import resolve_under, safe_child

DEFAULT_ROUTER = ROOT / "router_weights" / "default.safetensors"
PROMPTS = ["a red fox in the snow", "a bowl of ramen, studio lighting", "an astronaut riding a horse",
           "a lighthouse at dawn", "a watercolor city street", "macro photo of a beetle", "a castle on a hill",
           "portrait of an old sailor"]
# 8 prompts x 2 candidates: enough to train a router, small enough to embed in a blink
GOOD = [{"prompt": p, "candidate": c, "score": float((3 * i + 2 * j) % 5), "cost": cost}
        for i, p in enumerate(PROMPTS) for j, (c, cost) in enumerate([("fast", 0.5), ("slow", 2.0)])]
OLD = b"previous contents that must survive\n"


# -- setup helpers: each returns a function that writes the bad input under tmp_path --------------
def rows(*lines, name="data", after=True):
    """A data folder: one good row, then ``lines`` (so the first bad line is line 2), then the rest."""
    def setup(t):
        write_rows(t / name, [GOOD[0], *lines, *(GOOD[1:] if after else [])])
    return setup


def raw_jsonl(data: bytes, name="data"):
    def setup(t):
        (t / name).mkdir(parents=True, exist_ok=True)
        (t / name / "generations.jsonl").write_bytes(data)
    return setup


def good_data(name="data", metric_only_on=None):
    def setup(t):
        out = []
        for r in GOOD:
            r = dict(r)
            if metric_only_on and r["candidate"] == metric_only_on:
                r["scores"] = {"clip": 30.0 + r["score"]}
            out.append(r)
        write_rows(t / name, out)
    return setup


def custom_rows(rows_, name="data"):
    def setup(t):
        write_rows(t / name, rows_)
    return setup


def existing(rel: str, data: bytes = OLD):
    """A file the command must not replace."""
    def setup(t):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).write_bytes(data)
    return setup


def folder(rel: str):
    def setup(t):
        (t / rel).mkdir(parents=True, exist_ok=True)
    return setup


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(name: str, text: str | None = None, truncated: bool = False):
    def setup(t):
        (t / "data").mkdir(parents=True, exist_ok=True)
        body = b"\x89PNG\r\n\x1a\n"
        if truncated:
            body += struct.pack(">I", 13) + b"IHDR" + b"\x00\x00"  # chunk cut short
        else:
            body += png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            body += png_chunk(b"tEXt", b"cost_aware_router\x00" + (text or "").encode("latin-1"))
            body += png_chunk(b"IDAT", zlib.compress(b"\x00\x80")) + png_chunk(b"IEND", b"")
        (t / "data" / name).write_bytes(body)
    return setup


@functools.lru_cache(maxsize=1)
def knn_router_path() -> Path:
    """A kNN router on all 300 AGIQA-3K prompts of tests/data (5 candidates, 384-d): the known tensor
    layout the broken-file cases below mutate, whatever predictor the shipped default uses."""
    import tempfile

    from cost_aware_router.embed import get_embedder
    from cost_aware_router.router_file import save_router
    from cost_aware_router.scored import load_dataset
    from cost_aware_router.train import train_router

    path = Path(tempfile.mkdtemp(prefix="knn_router_")) / "knn.safetensors"
    save_router(train_router(load_dataset(DATA / "agiqa_3k"), get_embedder(), "knn"), path)
    return path


def router_file(meta=None, tensors=None, raw: bytes | None = None, name="router.safetensors"):
    """A copy of ``knn_router_path()`` with ``meta`` / ``tensors`` mutated."""
    def setup(t):
        if raw is not None:
            (t / name).write_bytes(raw)
        else:
            rewrite_router(knn_router_path(), t / name, meta, tensors)
    return setup


def truncated_router(t):
    (t / "router.safetensors").write_bytes(DEFAULT_ROUTER.read_bytes()[:5000])


def fake_shared_table(t):
    """A stand-in for ../shared/data holding a two-row TIFA table, so export-table has real input."""
    d = t / "shared" / "tifa_160"
    d.mkdir(parents=True)
    (d / "tifa_human_long.csv").write_text(
        "model,prompt,human_avg_1to5,clipscore_vitb32,tifa_mplug_large\n"
        "stable_diffusion_v1_5,a red fox,4.0,30.1,0.8\nstable_diffusion_v2_1,a red fox,3.5,29.0,0.7\n",
        encoding="utf-8")


def both(*setups):
    def setup(t):
        for s in setups:
            s(t)
    return setup


_set = set_meta


def _calibration(key, value):
    def mutate(m, h):
        m["calibration"][key] = [value] * len(m["calibration"][key])
    return mutate


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OUT = "{t}/out/r.safetensors"
SUB, INPROC = False, True  # INPROC: cli.main in this process (cases that need the embedder; it loads once)
TRAIN = ["train", "{t}/data", "--out", OUT]
ROUTE = ["route", "a cat", "--router", "{t}/router.safetensors"]

# (id, setup, CLI args ({t} = tmp_path), regex the single stderr line must match, in-process?, marks)
CASES = [
    # ---- scored-generations folders -------------------------------------------------------------------
    ("data-folder-missing", None, ["train", "{t}/nope", "--out", OUT], r"data folder .*nope does not exist", SUB),
    ("data-folder-empty", folder("data"), TRAIN, r"holds no scored generations", SUB),
    ("data-path-is-a-file", good_data(), ["train", "{t}/data/generations.jsonl", "--out", OUT],
     r"generations\.jsonl is a file; give the folder", SUB),
    ("jsonl-empty", raw_jsonl(b""), TRAIN, r"holds no scored generations", SUB),
    ("jsonl-blank-lines-only", raw_jsonl(b"\n  \n\t\n"), TRAIN, r"holds no scored generations", SUB),
    ("jsonl-malformed-line", rows('{"prompt": "b", "candid'), TRAIN, r"generations\.jsonl:2: malformed JSON", SUB),
    ("jsonl-truncated-last-line",
     raw_jsonl(b"".join(json.dumps(r).encode() + b"\n" for r in GOOD) + json.dumps(GOOD[0]).encode()[:25]),
     TRAIN, r"generations\.jsonl:17: malformed JSON", SUB),
    ("jsonl-non-utf8-line", raw_jsonl(json.dumps(GOOD[0]).encode() + b'\n{"prompt": "caf\xe9", "cand\xff"}\n'),
     TRAIN, r"generations\.jsonl:2: not valid UTF-8", SUB),
    ("jsonl-row-not-an-object", rows("[1, 2, 3]"), TRAIN, r":2: expected a JSON object, got list", SUB),
    ("field-prompt-missing", rows('{"candidate": "fast", "score": 1, "cost": 1}'), TRAIN,
     r":2: missing field 'prompt'", SUB),
    ("field-cost-missing", rows('{"prompt": "p", "candidate": "fast", "score": 1}'), TRAIN,
     r":2: missing field 'cost'", SUB),
    ("field-candidate-empty", rows('{"prompt": "p", "candidate": " ", "score": 1, "cost": 1}'), TRAIN,
     r":2: 'candidate' must be a non-empty string", SUB),
    ("score-nan", rows('{"prompt": "p", "candidate": "fast", "score": NaN, "cost": 1}'), TRAIN,
     r":2: 'score' must be a finite number, got nan", SUB),
    ("score-non-numeric", rows('{"prompt": "p", "candidate": "fast", "score": "high", "cost": 1}'), TRAIN,
     r":2: 'score' must be a finite number, got \"high\"", SUB),
    ("score-boolean", rows('{"prompt": "p", "candidate": "fast", "score": true, "cost": 1}'), TRAIN,
     r":2: 'score' must be a finite number, got true", SUB),
    ("cost-infinite", rows('{"prompt": "p", "candidate": "fast", "score": 1, "cost": 1e999}'), TRAIN,
     r":2: 'cost' must be a finite number >= 0, got inf", SUB),
    ("cost-null", rows('{"prompt": "p", "candidate": "fast", "score": 1, "cost": null}'), TRAIN,
     r":2: 'cost' must be a finite number >= 0, got null", SUB),
    ("cost-negative", rows('{"prompt": "p", "candidate": "fast", "score": 1, "cost": -0.5}'), TRAIN,
     r":2: 'cost' must be a finite number >= 0, got -0\.5", SUB),
    ("metric-value-infinite", rows('{"prompt": "p", "candidate": "fast", "score": 1, "cost": 1, '
                                   '"scores": {"clip": -Infinity}}'), TRAIN,
     r":2: 'scores\.clip' must be a finite number, got -inf", SUB),
    ("score-integer-too-large-for-float",
     rows('{"prompt": "p", "candidate": "fast", "score": 1' + "0" * 400 + ', "cost": 1}'), TRAIN,
     r"generations\.jsonl:2: 'score'", SUB),
    ("score-integer-over-4300-digits",
     rows('{"prompt": "p", "candidate": "fast", "score": 1' + "0" * 5000 + ', "cost": 1}'), TRAIN,
     r"generations\.jsonl:2", SUB),
    ("every-row-bad-with-skip-bad", raw_jsonl(b'{"prompt": 1}\nnot json\n'), [*TRAIN, "--skip-bad"],
     r"holds no scored generations .*; 2 bad row\(s\) skipped", SUB),
    ("png-truncated", both(good_data(), png("broken.png", truncated=True)), TRAIN,
     r"broken\.png: truncated PNG chunk", SUB),
    ("png-record-malformed", both(good_data(), png("bad.png", '{"prompt": "x", ')), TRAIN,
     r"bad\.png: malformed JSON in 'cost_aware_router' text chunk", SUB),
    ("png-record-missing-field", both(good_data(), png("bad.png", '{"prompt": "x"}')), TRAIN,
     r"bad\.png: missing field 'candidate'", SUB),
    # ---- data that cannot train a router ------------------------------------------------------------
    ("single-candidate", custom_rows([r for r in GOOD if r["candidate"] == "fast"]), TRAIN,
     r"at least 2 candidates, found \['fast'\]", SUB),
    ("too-few-prompts", custom_rows(GOOD[:6]), TRAIN, r"at least 4 scored prompts, found 3", SUB),
    ("candidate-without-the-metric", good_data(metric_only_on="fast"), [*TRAIN, "--metric", "clip"],
     r"candidate\(s\) \['slow'\] have no 'clip' scores", SUB),
    ("metric-unknown", good_data(), [*TRAIN, "--metric", "pickscore"],
     r"no row has metric 'pickscore'; metrics present: \['score'\]", SUB),
    ("predictor-unknown", good_data(), [*TRAIN, "--predictor", "forest"], r"invalid choice: 'forest'", SUB),
    ("prompt-lone-surrogate",
     raw_jsonl(b'{"prompt": "bad \\ud800 prompt", "candidate": "fast", "score": 1, "cost": 1}\n'
               + b"".join(json.dumps(r).encode() + b"\n" for r in GOOD)), TRAIN, r"generations\.jsonl:1", INPROC),
    ("cv-no-prompt-scored-by-every-candidate",
     custom_rows([r for i, r in enumerate(GOOD) if (i // 2 < 4) == (r["candidate"] == "fast")]),
     ["cv", "{t}/data"], r"every (router )?candidate|all candidates|complete", INPROC),
    ("cv-zero-folds", good_data(), ["cv", "{t}/data", "--folds", "0"],
     r"argument --folds: cross-validation needs at least 2 folds, got 0", INPROC),
    ("cv-one-fold", good_data(), ["cv", "{t}/data", "--folds", "1"],
     r"argument --folds: cross-validation needs at least 2 folds, got 1", INPROC),
    ("seed-negative", good_data(), [*TRAIN, "--seed", "-1"], r"argument --seed: must be >= 0, got -1", INPROC),
    # ---- outputs --------------------------------------------------------------------------------------
    ("out-exists-without-overwrite", both(good_data(), existing("out/r.safetensors")), TRAIN,
     r"r\.safetensors already exists; pass --overwrite", SUB),
    ("out-kept-when-data-is-bad-with-overwrite",
     both(rows('{"prompt": "b", "candid'), existing("out/r.safetensors")), [*TRAIN, "--overwrite"],
     r"generations\.jsonl:2: malformed JSON", SUB),
    ("out-is-a-folder-with-overwrite", both(good_data(), folder("out/r.safetensors")), [*TRAIN, "--overwrite"],
     r"r\.safetensors is a folder, not a file", INPROC),
    ("out-folder-missing", good_data(), ["train", "{t}/data", "--out", "{t}/missing/r.safetensors"],
     r"output folder .*missing does not exist", INPROC),
    ("out-parent-is-a-file", both(good_data(), existing("afile")), ["train", "{t}/data", "--out", "{t}/afile/r.st"],
     r"output folder .*afile", INPROC),
    ("out-folder-read-only", both(good_data(), lambda t: (t / "out").chmod(0o500)), TRAIN,
     r"output folder .*out is not writable", INPROC,
     pytest.mark.skipif(AS_ROOT, reason="root ignores permission bits; see out-folder-sysfs")),
    ("out-folder-sysfs", good_data(), ["train", "{t}/data", "--out", "/sys/r.safetensors"],
     r"output folder /sys is not writable", INPROC,
     pytest.mark.skipif(not (AS_ROOT and os.path.isdir("/sys")), reason="needs root and /sys")),
    ("plot-kept-when-candidates-differ", existing("curve.png"),
     ["evaluate", str(DEFAULT_ROUTER), str(DATA / "tifa_160"), "--metric", "score", "--plot", "{t}/curve.png",
      "--overwrite"],
     r"has no rows for candidate\(s\) \[", SUB),
    ("export-into-existing-folder", both(fake_shared_table, existing("exp/generations.jsonl")),
     ["export-table", "tifa_160", "{t}/exp", "--data", "{t}/shared"], r"generations\.jsonl already exists", SUB),
    ("export-name-with-dotdot", fake_shared_table, ["export-table", "../tifa_160", "{t}/exp", "--data", "{t}/shared"],
     r"unknown table '\.\./tifa_160'", SUB),
    ("export-name-absolute", fake_shared_table, ["export-table", "/etc/passwd", "{t}/exp", "--data", "{t}/shared"],
     r"unknown table '/etc/passwd'", SUB),
    ("export-data-folder-missing", None, ["export-table", "tifa_160", "{t}/exp", "--data", "{t}/nowhere"],
     r"does not exist|not found", SUB),
    ("export-out-is-a-file", both(fake_shared_table, existing("exp")),
     ["export-table", "tifa_160", "{t}/exp", "--data", "{t}/shared"], r"exp.*(is a file|not a folder)", SUB),
    # ---- router files ---------------------------------------------------------------------------------
    ("router-missing", None, ROUTE, r"router file .*router\.safetensors does not exist", SUB),
    ("router-is-a-folder", folder("router.safetensors"), ROUTE,
     r"router file .*router\.safetensors is a folder, not a file", SUB),
    ("router-truncated", truncated_router, ROUTE, r"not a readable safetensors file", SUB),
    ("router-empty-file", router_file(raw=b""), ROUTE, r"not a readable safetensors file", SUB),
    ("router-corrupt-header", router_file(raw=b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"), ROUTE,
     r"not a readable safetensors file", SUB),
    ("router-pickled", router_file(raw=pickle.dumps({"weights": [1, 2, 3]})), ROUTE,
     r"pickle .*pickles are never loaded", SUB),
    ("router-torch-save-zip", router_file(raw=b"PK\x03\x04" + b"\x00" * 60), ROUTE, r"torch\.save", SUB),
    ("router-wrong-format", router_file(meta=lambda m, h: h.update(format="other")), ROUTE,
     r"not a cost-aware router file", SUB),
    ("router-wrong-version", router_file(meta=lambda m, h: h.update(format_version="99")), ROUTE,
     r"format version '99'", SUB),
    ("router-negative-candidate-cost", router_file(meta=_set("candidates.0.cost", -1)), ROUTE,
     r"invalid cost -1", SUB),
    ("router-unknown-predictor", router_file(meta=_set("predictor.kind", "forest")), ROUTE,
     r"unknown predictor 'forest'", SUB),
    ("router-wrong-embedding-dim", router_file(meta=_set("embedder.dim", 128)), ROUTE,
     r"tensor 'knn_x' has shape \(300, 384\), expected \('\*', 128\)", SUB),
    ("router-wrong-candidate-count", router_file(tensors=lambda ts: ts.update(knn_y=ts["knn_y"][:, :3])), ROUTE,
     r"tensor 'knn_y' has shape \(300, 3\).*5 candidates", SUB),
    ("router-non-finite-tensor", router_file(tensors=lambda ts: ts["knn_x"].__setitem__((0, 0), np.inf)), ROUTE,
     r"tensor 'knn_x' has non-finite values", SUB),
    ("router-knn-rows-disagree", router_file(tensors=lambda ts: ts.update(knn_y=ts["knn_y"][:10])), ROUTE,
     r"tensors 'knn_x' and 'knn_y' disagree on the number of training prompts \(300 vs 10\)", SUB),
    ("router-params-lack-k", router_file(meta=lambda m, h: m["predictor"]["params"].pop("k")), ROUTE,
     r"predictor 'knn' needs a positive integer param 'k', got None", SUB),
    ("router-alpha-not-a-number", router_file(meta=_set("predictor.params.alpha", "x")), ROUTE,
     r"predictor param 'alpha' must be a number in \[0, 1\], got 'x'", SUB),
    ("router-alpha-nan", router_file(meta=_set("predictor.params.alpha", float("nan"))), ROUTE,
     r"predictor param 'alpha' must be a number in \[0, 1\], got nan", SUB),
    ("router-norm-mean-nan", router_file(meta=_set("norm.mean", float("nan"))), ROUTE,
     r"'norm' needs a finite mean and a finite, positive std", SUB),
    ("router-calibration-not-numbers", router_file(meta=_calibration("cost_weight", "a")), ROUTE,
     r"'calibration' cost weights and mean costs must be finite numbers >= 0", SUB),
    ("router-calibration-nan", router_file(meta=_calibration("mean_cost", float("nan"))), ROUTE,
     r"'calibration' cost weights and mean costs must be finite numbers >= 0", SUB),
    ("router-default-budget-not-a-number", router_file(meta=_set("default_budget", "cheap")), ROUTE,
     r"'default_budget' must be null or a finite number >= 0, got 'cheap'", SUB),
    ("router-embedder-dim-differs",
     router_file(meta=_set("embedder.dim", 100), tensors=lambda ts: ts.update(knn_x=ts["knn_x"][:, :100].copy(),
                                                                             ref_x=ts["ref_x"][:, :100].copy())),
     ROUTE, r"trained on 100-dimensional embeddings .* gives 384", INPROC),
    ("router-embedder-fingerprint-differs", router_file(meta=_set("embedder.fingerprint", "deadbeef")), ROUTE,
     r"fingerprint deadbeef\), not .*fingerprint [0-9a-f]{16}", INPROC),
    ("router-and-data-candidates-differ", None,
     ["evaluate", str(DEFAULT_ROUTER), str(DATA / "tifa_160"), "--metric", "score", "--json"],
     r"tifa_160 has no rows for candidate\(s\) \['sd15-50-highcfg'.*it has \['sd11-50'", SUB),
    ("data-has-no-prompt-for-every-router-candidate",
     custom_rows([{"prompt": p, "candidate": c, "score": 3.0, "cost": 1.0, "scores": {"mos_quality": 3.0}}
                  for i, p in enumerate(PROMPTS)
                  for j, c in enumerate(["sd15-50-highcfg", "sd15-50-lowcfg", "sd15-10", "sd15-50", "sdxl-50"])
                  if j != i % 5]),
     ["evaluate", str(DEFAULT_ROUTER), "{t}/data", "--json"], r"no prompt has a score for every router candidate",
     INPROC),
    # ---- budgets and routing flags --------------------------------------------------------------------
    ("budget-negative", None, ["route", "x", "--budget", "-1"], r"budget must be a finite number >= 0, got -1", SUB),
    ("budget-nan", None, ["route", "x", "--budget", "nan"], r"budget must be a finite number >= 0, got nan", SUB),
    ("budget-overflows-to-inf", None, ["route", "x", "--budget", "1e999"],
     r"budget must be a finite number >= 0, got inf", SUB),
    ("budget-not-a-number", None, ["route", "x", "--budget", "cheap"], r"invalid float value: 'cheap'", SUB),
    ("cost-weight-infinite", None, ["route", "x", "--cost-weight=-inf"],
     r"cost weight must be a finite number >= 0, got -inf", SUB),
    ("max-cost-negative", None, ["route", "x", "--max-cost", "-0.5"],
     r"max cost must be a finite number >= 0, got -0\.5", SUB),
    ("max-cost-below-every-candidate", None, ["route", "x", "--max-cost", "0.01"],
     r"no candidate costs at most 0\.01 s/image; the cheapest, 'sd15-10'", SUB),
    ("two-budget-flags", None, ["route", "x", "--budget", "1", "--best-quality"], r"not allowed with", SUB),
    ("force-unknown-candidate", None, ["route", "x", "--force", "../sd15-10"],
     r"forced candidate '\.\./sd15-10' is not in the router", SUB),
    ("no-prompt", None, ["route"], r"no prompt given", SUB),
    ("prompts-file-missing", None, ["route", "--prompts-file", "{t}/prompts.txt"],
     r"prompts file .*prompts\.txt does not exist", SUB),
    ("prompts-file-non-utf8", existing("prompts.txt", b"a cat\ncaf\xe9 au lait\n"),
     ["route", "--prompts-file", "{t}/prompts.txt"], r"prompts\.txt is not valid UTF-8", SUB),
    ("prompts-file-blank", existing("prompts.txt", b"\n   \n"), ["route", "--prompts-file", "{t}/prompts.txt"],
     r"no prompt given", SUB),
    ("prompts-file-is-a-folder", folder("prompts.txt"), ["route", "--prompts-file", "{t}/prompts.txt"],
     r"prompts\.txt (is a (folder|directory)|is not a (regular )?file)", SUB),
    ("embedder-folder-missing", None, ["route", "x", "--embedder", "{t}/no_model"],
     r"embedder folder .*no_model does not exist", INPROC),
    ("embedder-folder-without-config", folder("model"), ["route", "x", "--embedder", "{t}/model"],
     r"has no config\.json", INPROC),
    ("embedder-config-malformed", existing("model/config.json", b"{not json"),
     ["route", "x", "--embedder", "{t}/model"],
     r"config\.json", INPROC),
]


def _params():
    out = []
    for cid, setup, args, expect, inproc, *marks in CASES:
        out.append(pytest.param(setup, args, expect, inproc, id=cid, marks=marks))
    return out


def _snapshot(root: Path) -> dict:
    """Every path under ``root`` with its content hash (None for folders)."""
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        snap[rel] = None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def _invoke(args, inproc, capsys):
    if not inproc:
        proc = run_cli(*args)
        return proc.returncode, proc.stdout, proc.stderr
    capsys.readouterr()
    try:
        rc = cli.main(list(args))
    except SystemExit as exc:  # argparse
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_catalogue_case_names_are_unique():
    """pytest ids come from the names: a repeated name would hide a case behind its twin."""
    ids = [c[0] for c in CASES]
    assert sorted(ids) == sorted(set(ids)), [i for i in ids if ids.count(i) > 1]


@pytest.mark.parametrize("setup, args, expect, inproc", _params())
def test_bad_input_ends_in_one_clear_line(tmp_path, capsys, setup, args, expect, inproc):
    (tmp_path / "out").mkdir()
    if setup:
        setup(tmp_path)
    before = _snapshot(tmp_path)
    argv = [a.format(t=tmp_path) for a in args]
    rc, out, err = _invoke(argv, inproc, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err, out[:300])
    assert len(lines) == 1, err
    assert "Traceback" not in err
    line = lines[0]
    assert line.startswith("cost-aware-router"), line
    assert "unexpected" not in line, line  # the fallback for failures nobody anticipated
    assert re.search(expect, line), (expect, line)
    assert out == "", out[:300]  # nothing half-printed
    after = _snapshot(tmp_path)
    assert not [p for p in after if p.rsplit("/", 1)[-1].endswith(".tmp")], after
    assert after == before  # nothing created, replaced or lost
    if os.path.isdir("/sys"):
        assert not [n for n in os.listdir("/sys") if "safetensors" in n]


# -- prompts that must route ---------------------------------------------------------------------------------
def _routed(proc, prompts):
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(prompts)
    names = load_router(DEFAULT_ROUTER).names
    for line, prompt in zip(lines, prompts):
        row = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
        assert row["prompt"] == prompt
        assert row["candidate"] in names and set(row["cost"]) == set(names) == set(row["predicted_quality"])
        assert all(math.isfinite(v) for v in row["predicted_quality"].values())
        assert row["config"]["checkpoint"]


def test_empty_prompt_routes():
    _routed(run_cli("route", "", "--json"), [""])


def test_100000_character_prompts_route(tmp_path):
    words = "a red fox jumps over a lazy dog in the snow at dawn, watercolor, detailed "
    big = (words * (100_000 // len(words) + 1))[:100_000]
    other = ("ünïcödé 🦊 " * 10_000)[:100_000]
    assert len(big) == len(other) == 100_000
    pf = tmp_path / "prompts.txt"
    pf.write_text(other + "\n", encoding="utf-8")
    _routed(run_cli("route", big, "--prompts-file", pf, "--json", "--budget", "1.5"), [big, other])


def test_non_utf8_prompt_argument_is_named():
    """A prompt argument that is not UTF-8 (here the byte 0xe9, which Python holds as a lone surrogate)
    is refused in one line naming the argument, not routed with replacement characters."""
    proc = run_cli("route", "ok", "caf\udce9 au lait", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "cost-aware-router: error: prompt argument 2 is not valid UTF-8"


# -- the core under the nodes: data folders and file names from the Train node ------------------------------
@pytest.mark.parametrize("path, message", [
    ("../outside", "outside the allowed folders"),
    ("{outside}", "outside the allowed folders"),
    ("/etc", "outside the allowed folders"),
    ("link_out", "outside the allowed folders"),
    ("data/../../outside", "outside the allowed folders"),
    ("missing", "does not exist under"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("da\x00ta", "NUL byte"),
])
def test_training_node_data_folder_cannot_leave_its_roots(tmp_path, path, message):
    root, outside = tmp_path / "input", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RouterError, match=message):
        resolve_under(path.format(outside=outside), [root], "data folder")
    assert resolve_under("data", [root]) == (root / "data").resolve()
    assert resolve_under(str(root / "data"), [tmp_path / "elsewhere", root]) == (root / "data").resolve()


@pytest.mark.parametrize("name", ["..\\evil", "sub/../x", "./x", "~/x", " ", "x/", "/x.safetensors"])
def test_training_node_output_name_stays_in_its_folder(tmp_path, name):
    with pytest.raises(RouterError):
        safe_child(tmp_path, name, ".safetensors")
    assert os.listdir(tmp_path) == []


def test_route_node_pool_mismatch_and_bad_costs():
    r = load_router(DEFAULT_ROUTER)
    with pytest.raises(RouterError, match=r"missing from the pool: \['sdxl-50'\]; not in the router: \['turbo'\]"):
        r.check_candidates([n for n in r.names if n != "sdxl-50"] + ["turbo"])
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(RouterError, match="must be a finite number >= 0"):
            r.with_costs({"sd15-10": bad})
    r.check_candidates(list(reversed(r.names)))  # order does not matter


# -- property tests --------------------------------------------------------------------------------------------
FIELDS = ("budget", "cost_weight", "max_cost")
finite_non_negative = st.one_of(st.floats(min_value=0, allow_nan=False, allow_infinity=False),
                                st.integers(min_value=0, max_value=2 ** 1000))
invalid = st.one_of(st.floats(max_value=-5e-324),  # every negative float, -inf included (not -0.0)
                    st.just(float("nan")), st.just(float("inf")),
                    st.integers(min_value=-(2 ** 1000), max_value=-1), st.booleans(),
                    st.text(max_size=5), st.lists(st.floats(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(FIELDS), value=finite_non_negative)
def test_budget_accepts_every_finite_non_negative_number(field, value):
    b = Budget(**{field: value})
    assert getattr(b, field) == float(value)  # stored as a float
    assert b.describe()


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(FIELDS), value=invalid)
def test_budget_rejects_every_negative_or_non_finite_value(field, value):
    with pytest.raises(RouterError, match=field.replace("_", " ")):
        Budget(**{field: value})


def test_budget_with_an_integer_beyond_float_range():
    with pytest.raises(RouterError, match=r"^budget must be a finite number >= 0, got a number too large$"):
        Budget(budget=10 ** 400)
    assert Budget(budget=10 ** 300).budget == 1e300  # a big integer inside float range is a valid target


@pytest.fixture(scope="module")
def default_router(embedder):
    r = load_router(DEFAULT_ROUTER)
    r.use_embedder(embedder)
    return r


ROUTE_PROMPTS = ["", "a red fox in the snow", "portrait of an old sailor, oil painting", "🦊 ünïcödé",
                 "x" * 5000, "a " * 3000]
modes = st.one_of(st.just({}), st.just({"best_quality": True}),
                  st.builds(lambda v: {"budget": v}, finite_non_negative),
                  st.builds(lambda v: {"cost_weight": v}, finite_non_negative))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # cost weights near 1e308
@settings(max_examples=80, deadline=None)
@given(mode=modes, cap=st.none() | st.floats(min_value=0, max_value=10), force=st.none() | st.integers(0, 4))
def test_routing_with_any_budget_returns_a_valid_candidate(default_router, mode, cap, force):
    r = default_router
    b = Budget(**mode, max_cost=cap, force=None if force is None else r.names[force])
    if cap is not None and cap < r.cost.min():
        with pytest.raises(RouterError, match="no candidate costs at most"):
            r.route(ROUTE_PROMPTS, b)
        return
    if b.force and cap is not None and r.cost[force] > cap + 1e-12:
        with pytest.raises(RouterError, match="over the cap .* a capped candidate is never chosen"):
            r.route(ROUTE_PROMPTS, b)
        return
    decisions = r.route(ROUTE_PROMPTS, b)
    assert [d.prompt for d in decisions] == ROUTE_PROMPTS
    for d in decisions:
        assert d.candidate in r.names
        json.dumps(d.to_json(), allow_nan=False)
        if b.force:
            assert d.candidate == b.force
        if cap is not None:
            assert d.cost[d.candidate] <= cap + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=8), min_size=2, max_size=5))
def test_a_larger_budget_never_picks_a_cheaper_candidate(default_router, budgets):
    per_budget = [[d.cost[d.candidate] for d in default_router.route(ROUTE_PROMPTS, Budget(budget=b))]
                  for b in sorted(budgets)]
    for lo, hi in zip(per_budget, per_budget[1:]):
        assert all(a <= b for a, b in zip(lo, hi)), (sorted(budgets), per_budget)

