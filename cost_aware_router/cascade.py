"""Verify and escalate (router + cascade): the router picks a first candidate from the prompt, a scorer
checks the image, and a cheap image that scores badly is escalated to a dearer candidate when the
expected gain is worth its cost; the best image seen is delivered.

Units are the router's: qualities in standard deviations of its metric (``z``), costs in seconds per
image, ``lam`` the cost weight of the budget. For one prompt the state is the images generated so far,
each with a quality estimate ``q`` (its score read as the router's metric). The policy (``step``):

* ``q`` of an image of candidate ``a`` with verifying score ``u`` (normalised): ``w_a . [1, z_a, u]``,
  fitted per candidate on the training folder's rows (several seeds per cell are separate rows); when
  the verifying metric *is* the router's metric (the usual case: the same scorer trained the router)
  ``q = u`` exactly;
* the quality of a new image of candidate ``b`` given an observed image of ``a`` is Gaussian with mean
  ``v_ab . [1, z_b, z_a, q_a]`` and the pair's residual sd (with several observations: the mean of the
  means and the smallest sd), fitted per ordered pair on prompts both were scored on (a pooled model
  for pairs with fewer than ``MIN_PAIR`` prompts);
* the value of generating ``b`` is the expected improvement over the best ``q`` so far,
  ``E[max(0, Q_b - best)]``, minus ``lam * cost_b``; escalate to the best such ``b`` when that is
  positive (never to a candidate already generated, over the cap, over ``max_cost`` for the prompt in
  total, or past ``max_images`` images); otherwise deliver the image with the highest ``q``.

``fit_cascade`` fits these models on out-of-fold predictions, simulates routing alone and the hybrid on
the prompts every candidate was scored on (each fold's models applied to the prompts they did not see),
and switches escalation on only if the hybrid's utility ``quality - lam * cost`` beats routing alone's
by more than ``SE_MARGIN`` standard errors over the prompts (averaged over the middle of the cost
range). Its calibration curve counts every generation, so a budget targets the average cost including
escalations. A router file without a cascade (older files) never escalates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .decision.rule import choose, pick
from .predictors import kfold
from .significance import SE_MARGIN

CASCADE_VERSION = 1
MAX_IMAGES = 2  # images per prompt: the routed one and at most one escalation
MIN_COMPLETE = 20  # prompts scored by every candidate, needed to fit and check a cascade
MIN_PAIR = 12  # prompts a candidate pair needs for a model of its own (fewer: the pooled model)
RIDGE = 1.0  # penalty on the non-intercept weights of the small regressions (standardised features)
CELL_IMAGES = 4  # images of one (prompt, candidate) used by the simulation (one pass per rank)
GATE_POINTS = 5  # cost weights along the middle of the cost range where the gate compares utilities
MAX_CASCADE_CANDIDATES = 32  # more candidates: no cascade is fitted (C^2 pair models)
SCALE_WARN_SD = 10.0  # an observed score this many sds from the verifying metric's mean is flagged


@dataclass
class Cascade:
    """A fitted verify-and-escalate policy over the router's first ``len(names)`` candidates."""

    names: list[str]
    verify_metric: str
    verify_norm: dict  # mean, std of the verifying metric's raw scores
    identity: bool  # the verifying metric is the router's metric: q is the normalised score itself
    image_w: np.ndarray  # [C, 3] q = w . [1, z_a, u]
    pair_w: np.ndarray  # [C, C, 4] mean of Q_b given a: v . [1, z_b, z_a, q_a]
    pair_sd: np.ndarray  # [C, C] residual sd of that model
    enabled: bool = True
    max_images: int = MAX_IMAGES
    calibration: dict | None = None  # the curve counting every generation (budget.calibrate's keys)
    report: dict = field(default_factory=dict)  # what the fit measured: gate figures, pairs, prompts

    # -- file ----------------------------------------------------------------------------
    def meta(self) -> dict:
        return {"version": CASCADE_VERSION, "names": list(self.names), "verify_metric": self.verify_metric,
                "verify_norm": dict(self.verify_norm), "identity": bool(self.identity), "enabled": bool(self.enabled),
                "max_images": int(self.max_images), "calibration": self.calibration, "report": self.report}

    def tensors(self) -> dict[str, np.ndarray]:
        return {"cascade_image_w": self.image_w, "cascade_pair_w": self.pair_w, "cascade_pair_sd": self.pair_sd}

    @classmethod
    def from_state(cls, meta: dict, tensors: dict) -> Cascade:
        t = {k: np.asarray(tensors[k], np.float64) for k in ("cascade_image_w", "cascade_pair_w", "cascade_pair_sd")}
        return cls(list(meta["names"]), str(meta["verify_metric"]), dict(meta["verify_norm"]), bool(meta["identity"]),
                   t["cascade_image_w"], t["cascade_pair_w"], t["cascade_pair_sd"], bool(meta["enabled"]),
                   int(meta["max_images"]), meta.get("calibration"), dict(meta.get("report") or {}))

    # -- reading observations ----------------------------------------------------------
    def normalise(self, score) -> np.ndarray:
        return (np.asarray(score, np.float64) - self.verify_norm["mean"]) / self.verify_norm["std"]

    def quality(self, cand, z_cand, score) -> np.ndarray:
        """q (router units) of images of candidates ``cand`` (indices into ``names``) with raw scores."""
        u = self.normalise(score)
        if self.identity:
            return u
        w = self.image_w[np.asarray(cand, int)]
        return w[..., 0] + w[..., 1] * np.asarray(z_cand, np.float64) + w[..., 2] * u

    def far_from_scale(self, score: float) -> bool:
        return abs(float(self.normalise(score))) > SCALE_WARN_SD

    def scale_warning(self, scores) -> str:
        """One line when observed ``scores`` lie more than SCALE_WARN_SD sds from the verifying metric's mean
        (likely another metric: a CLIPScore into a router of human ratings); '' when none does."""
        far = [float(s) for s in scores if self.far_from_scale(s)]
        if not far:
            return ""
        worst = max(far, key=lambda s: abs(float(self.normalise(s))))
        return (f"{len(far)} observed score(s) (e.g. {worst:g}) are over {SCALE_WARN_SD:g} standard deviations from "
                f"the mean of '{self.verify_metric}' ({self.verify_norm['mean']:.4g} ± {self.verify_norm['std']:.3g}) "
                "this router verifies with; if the scorer gives another metric, the decision to escalate means "
                "nothing: score with the router's own metric")


def expected_improvement(d: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[max(0, X)] for X ~ N(d, sd^2) (sd 0: max(0, d))."""
    d, sd = np.broadcast_arrays(np.asarray(d, np.float64), np.asarray(sd, np.float64))
    safe = np.where(sd > 1e-12, sd, 1.0)
    x = d / safe
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2)))
    return np.where(sd > 1e-12, safe * pdf + d * cdf, np.maximum(d, 0.0))


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7): numpy has no erf."""
    s, a = np.sign(x), np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def step(cas: Cascade, z: np.ndarray, observed: np.ndarray, q: np.ndarray, spent: np.ndarray, lam, cost: np.ndarray,
         allowed: np.ndarray | None = None, max_cost: float | None = None) -> np.ndarray:
    """The next candidate for each prompt (rows of ``z`` [P, C] over ``cas.names``), or -1 to deliver.

    ``observed`` [P, C] bool: candidates already generated; ``q`` [P, C] their quality estimates (any
    value where not observed); ``spent`` [P] seconds spent so far; ``lam`` one cost weight or one per
    prompt. Never returns an observed candidate, one outside ``allowed``, one that would take the
    prompt's total past ``max_cost``, or any once ``max_images`` images exist."""
    z = np.asarray(z, np.float64)
    P, C = z.shape
    obs = np.asarray(observed, bool)
    n = obs.sum(axis=1)
    if not cas.enabled:
        return np.full(P, -1)
    o = obs.astype(np.float64)
    qo = np.where(obs, np.asarray(q, np.float64), 0.0)
    w = cas.pair_w
    mean = (o @ w[:, :, 0] + (o @ w[:, :, 1]) * z + (o * z) @ w[:, :, 2] + qo @ w[:, :, 3]) / np.maximum(n, 1)[:, None]
    sd = np.where(obs[:, :, None], cas.pair_sd[None, :, :], np.inf).min(axis=1)
    best = np.where(obs, qo, -np.inf).max(axis=1)
    lam = np.broadcast_to(np.asarray(lam, np.float64).reshape(-1), (P,))
    ok = ~obs & (n[:, None] >= 1) & (n[:, None] < cas.max_images) & np.isfinite(sd)
    if allowed is not None:
        ok &= np.asarray(allowed, bool)[None, :C]
    if max_cost is not None:
        ok &= (np.asarray(spent, np.float64)[:, None] + cost[None, :C]) <= max_cost + 1e-12
    with np.errstate(over="ignore", invalid="ignore"):
        gain = expected_improvement(mean - best[:, None], np.where(np.isfinite(sd), sd, 0.0)) - lam[:, None] * cost[
            None, :C]
    gain = np.where(ok & np.isfinite(gain), gain, -np.inf)
    nxt = pick(gain, cost[:C])
    return np.where(gain[np.arange(P), nxt] > 1e-12, nxt, -1)


# -- fitting -------------------------------------------------------------------------------
def _ridge(F: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares with a small penalty on the standardised non-intercept columns; (weights, residual sd)."""
    mu, sd = F[:, 1:].mean(axis=0), F[:, 1:].std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    G = np.concatenate([np.ones((len(F), 1)), (F[:, 1:] - mu) / sd], axis=1)
    pen = np.eye(G.shape[1]) * RIDGE
    pen[0, 0] = 0.0
    beta = np.linalg.solve(G.T @ G + pen, G.T @ t)
    res = t - G @ beta
    w = np.concatenate([[beta[0] - float((beta[1:] * mu / sd).sum())], beta[1:] / sd])
    dof = max(len(t) - G.shape[1], 1)
    return w, float(math.sqrt(float(res @ res) / dof))


def _image_models(z_img: np.ndarray, u: np.ndarray, y: np.ndarray, cand: np.ndarray, C: int) -> np.ndarray:
    w = np.zeros((C, 3))
    for a in range(C):
        rows = (cand == a) & np.isfinite(u)
        if rows.sum() >= 5:
            w[a] = _ridge(np.stack([np.ones(rows.sum()), z_img[rows], u[rows]], axis=1), y[rows])[0]
        else:  # too few rows: the prompt-level prediction alone
            w[a] = [0.0, 1.0, 0.0]
    return w


def _pair_samples(cells: list[list[list[int]]], z: np.ndarray, q_img: np.ndarray, prompts: np.ndarray, a: int, b: int
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Features [1, z_b, z_a, q_a] and targets q_b over the prompts both were scored on (images of a cell
    paired rank by rank, up to CELL_IMAGES)."""
    F, t, used = [], [], 0
    for p in prompts:
        ia, ib = cells[p][a], cells[p][b]
        if not ia or not ib:
            continue
        used += 1
        for r in range(min(CELL_IMAGES, max(len(ia), len(ib)))):
            i, j = ia[r % len(ia)], ib[r % len(ib)]
            F.append((1.0, z[p, b], z[p, a], q_img[i]))
            t.append(q_img[j])
    return np.array(F).reshape(-1, 4), np.array(t), used


def _pair_models(cells, z, q_img, prompts, C) -> tuple[np.ndarray, np.ndarray, int]:
    W, S = np.zeros((C, C, 4)), np.zeros((C, C))  # the diagonal is never used (a candidate is generated once)
    pooled_F, pooled_t, small = [], [], []
    for a in range(C):
        for b in range(C):
            if a == b:
                continue
            F, t, used = _pair_samples(cells, z, q_img, prompts, a, b)
            pooled_F.append(F)
            pooled_t.append(t)
            if used >= MIN_PAIR:
                W[a, b], S[a, b] = _ridge(F, t)
            else:
                small.append((a, b))
    if small:  # fit_cascade needs MIN_COMPLETE >= MIN_PAIR complete prompts, so the pooled model has data
        w, s = _ridge(np.concatenate(pooled_F), np.concatenate(pooled_t))
        for a, b in small:
            W[a, b], S[a, b] = w, s
    return W, S, len(small)


def _cells(images, P: int, C: int) -> list[list[list[int]]]:
    cells = [[[] for _ in range(C)] for _ in range(P)]
    for i, (p, c) in enumerate(zip(images.prompt.tolist(), images.candidate.tolist())):
        cells[p][c].append(i)
    return cells


def complete_cells(images, P: int, C: int, cells: list | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The prompts with a scored image (with a verifying score) of every candidate, and per rank r (up to
    CELL_IMAGES) the image index [n, C] of each of their cells: its r-th image, cycling through a cell's
    images. What the simulation of a cascade runs on. ``cells``: ``_cells`` of the images, when at hand."""
    cells = cells if cells is not None else _cells(images, P, C)
    ok = np.isfinite(images.verify)
    comp = np.array([p for p in range(P) if all(cells[p][c] and ok[cells[p][c]].all() for c in range(C))], int)
    if not len(comp):
        return comp, []
    ranks = min(CELL_IMAGES, max(len(cells[p][c]) for p in comp for c in range(C)))
    return comp, [np.array([[cells[p][c][r % len(cells[p][c])] for c in range(C)] for p in comp])
                  for r in range(ranks)]


def _fit_models(images, cells, z, u, y_img, prompts, C, identity
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Image and pair models fitted on the images of ``prompts``; q of every image under them."""
    in_train = np.isin(images.prompt, prompts)
    z_img = z[images.prompt, images.candidate]
    if identity:
        image_w = np.tile([0.0, 0.0, 1.0], (C, 1))
        q_img = u.copy()
    else:
        image_w = _image_models(z_img[in_train], u[in_train], y_img[in_train], images.candidate[in_train], C)
        w = image_w[images.candidate]
        q_img = w[:, 0] + w[:, 1] * z_img + w[:, 2] * np.nan_to_num(u)
    W, S, pooled = _pair_models(cells, z, q_img, prompts, C)
    return image_w, W, S, q_img, pooled


def simulate(cas: Cascade, z: np.ndarray, Q: np.ndarray, Y: np.ndarray, cost: np.ndarray, lam: float,
             allowed: np.ndarray | None = None, max_cost: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Route and escalate every prompt (rows) whose images are known for every candidate: ``Q`` [P, C]
    the quality estimates of those images, ``Y`` [P, C] their true value. Returns per prompt (seconds
    spent, true value of the delivered image, images generated)."""
    P, C = z.shape
    first = choose(z, cost, lam, allowed)
    obs = np.zeros((P, C), bool)
    obs[np.arange(P), first] = True
    spent = cost[first].astype(np.float64)
    for _ in range(cas.max_images - 1):
        nxt = step(cas, z, obs, Q, spent, lam, cost, allowed, max_cost)
        go = nxt >= 0
        if not go.any():
            break
        obs[np.nonzero(go)[0], nxt[go]] = True
        spent[go] += cost[nxt[go]]
    deliver = np.argmax(np.where(obs, Q, -np.inf), axis=1)
    return spent, Y[np.arange(P), deliver], obs.sum(axis=1)


def _gate_lams(cal: dict, cost: np.ndarray, best_cost: float) -> list[float]:
    """Cost weights whose routing-alone average cost lies between the cheapest candidate's and the best
    single candidate's (the range a budget is usually set in), GATE_POINTS of them spread evenly."""
    lo = float(cost.min())
    mid = [lam for lam, c in zip(cal["cost_weight"], cal["mean_cost"]) if lo + 1e-9 < c < best_cost - 1e-9]
    if not mid:
        mid = list(cal["cost_weight"])
    idx = np.unique(np.linspace(0, len(mid) - 1, min(GATE_POINTS, len(mid))).round().astype(int))
    return [float(mid[i]) for i in idx]


def fit_cascade(ds, oof: np.ndarray, norm: dict, calibration: dict, folds: int = 5, seed: int = 0) -> Cascade | None:
    """Fit, check and calibrate a cascade from a dataset's per-image rows (``Dataset.images``) and the
    predictor's out-of-fold predictions ``oof`` [P, C] (router units). None when the folder cannot fit
    one (fewer than MIN_COMPLETE prompts with an image of every candidate, or no verifying scores)."""
    images = ds.images
    P, C = oof.shape
    if C > MAX_CASCADE_CANDIDATES or C < 2:
        return None
    verify_metric = images.verify_metric
    identity = verify_metric == ds.metric
    y_img = (images.value - norm["mean"]) / norm["std"]
    raw_v = images.verify
    have_v = np.isfinite(raw_v)
    if not have_v.any() or len(images.prompt) == 0:
        return None
    # the router's own metric is read with the router's normalisation: q is then the normalised score itself
    vmean, vstd = ((float(norm["mean"]), float(norm["std"])) if identity
                   else (float(raw_v[have_v].mean()), float(raw_v[have_v].std())))
    if not (vstd > 0 and math.isfinite(vstd)):
        return None
    u = (raw_v - vmean) / vstd
    cells = _cells(images, P, C)
    z = np.nan_to_num(np.asarray(oof, np.float64))
    comp, picks = complete_cells(images, P, C, cells)
    if len(comp) < MIN_COMPLETE:
        return None
    lams = [float(x) for x in calibration["cost_weight"]]
    cost = np.asarray(ds.cost, np.float64)
    ranks, n_comp = len(picks), len(comp)
    hyb_cost, hyb_q = np.zeros((len(lams), n_comp)), np.zeros((len(lams), n_comp))
    rt_cost, rt_q = np.zeros((len(lams), n_comp)), np.zeros((len(lams), n_comp))
    n_img = np.zeros((len(lams), n_comp))
    vnorm = {"mean": vmean, "std": vstd}
    for test in kfold(n_comp, folds, seed + 7):
        train = np.setdiff1d(np.arange(P), comp[test])
        image_w, W, S, q_img, _ = _fit_models(images, cells, z, u, y_img, train, C, identity)
        cas = Cascade(list(ds.candidates), verify_metric, vnorm, identity, image_w, W, S)
        tp = comp[test]
        for r in range(ranks):
            pick = picks[r][test]
            Q, Y = q_img[pick], y_img[pick]
            for li, lam in enumerate(lams):
                s, y, k = simulate(cas, z[tp], Q, Y, cost, lam)
                hyb_cost[li, test] += s / ranks
                hyb_q[li, test] += y / ranks
                n_img[li, test] += k / ranks
                first = choose(z[tp], cost, lam)
                rt_cost[li, test] += cost[first] / ranks
                rt_q[li, test] += Y[np.arange(len(tp)), first] / ranks
    image_w, W, S, _, pooled = _fit_models(images, cells, z, u, y_img, np.arange(P), C, identity)
    means = np.array([np.nanmean(y_img[images.candidate == c]) for c in range(C)])
    best_cost = float(cost[int(np.argmax(means))])
    gate = _gate_lams(calibration, cost, best_cost)
    gi = [lams.index(g) for g in gate]
    diff = np.mean([(hyb_q[i] - gate[k] * hyb_cost[i]) - (rt_q[i] - gate[k] * rt_cost[i])
                    for k, i in enumerate(gi)], axis=0)
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    enabled = gain - SE_MARGIN * se > 0
    cal = {"cost_weight": lams, "mean_cost": [float(x) for x in hyb_cost.mean(axis=1)],
           "mean_quality": [float(x * norm["std"] + norm["mean"]) for x in hyb_q.mean(axis=1)],
           "mean_images": [round(float(x), 4) for x in n_img.mean(axis=1)], "prompts": int(n_comp)}
    report = {"prompts": int(n_comp), "images_per_cell": int(ranks), "pairs_pooled": int(pooled),
              "gate_cost_weights": gate, "utility_gain": gain, "utility_gain_se": se,
              "escalation_share": [float((n_img[i] > 1.5).mean()) for i in gi]}
    return Cascade(list(ds.candidates), verify_metric, vnorm, identity, image_w, W, S, enabled, MAX_IMAGES, cal,
                   report)


@dataclass
class Verdict:
    """One prompt's answer given its observed images: generate ``next`` (candidate index, seed) or deliver
    ``deliver`` (index into the observations), with the words that say why."""

    next: tuple[int, int] | None
    deliver: int | None
    words: str


def decide_observed(cas: Cascade | None, names: list[str], cost: np.ndarray, z_row: np.ndarray, lam: float,
                    observations: list[tuple[int, object, float]], allowed: np.ndarray | None = None,
                    max_cost: float | None = None, metric: str = "score") -> Verdict:
    """Escalate or deliver for one prompt. ``observations``: (candidate index into ``names``, seed, raw
    score) of its images so far (at least one). A policy that does not cover every candidate of ``names``
    (one was added after training) delivers without escalating, as does one switched off."""
    C = len(cas.names) if cas is not None else 0
    obs = np.zeros(C, bool)
    covered = cas is not None and cas.names == names
    q_obs = [float(cas.quality(c, z_row[c], s)) if covered else float(s) for c, _, s in observations]
    best_i = int(np.argmax(q_obs))
    spent = float(sum(cost[c] for c, _, _ in observations))
    kept = observations[best_i]
    deliver = Verdict(None, best_i, "")
    if not covered or not cas.enabled:
        why = ("this router cannot escalate (no verify-and-escalate policy in its file)" if cas is None else
               "escalation did not pay on this router's training prompts (it is switched off)" if not cas.enabled
               else "its candidates differ from those its verify-and-escalate policy was trained on (a candidate "
               "was added, or the pool holds only some of them): routing alone")
        deliver.words = f"delivered '{names[kept[0]]}' (seed {kept[1]}): best score {kept[2]:.4g}; {why}"
        return deliver
    qc = np.full(C, -np.inf)
    for (c, _, _), q in zip(observations, q_obs):
        obs[c] = True
        qc[c] = max(qc[c], q)
    nxt = -1
    if len(observations) < cas.max_images:
        nxt = int(step(cas, z_row[None, :C], obs[None, :], qc[None, :], np.array([spent]), lam, cost[:C],
                       None if allowed is None else np.asarray(allowed)[:C], max_cost)[0])
    value = f"{kept[2]:.4g}" + ("" if metric == "score" else f" ({metric})")
    if nxt < 0:
        deliver.words = (f"kept '{names[kept[0]]}' (seed {kept[1]}, score {value}): no candidate not yet generated is "
                         f"expected to add more than its cost at cost weight {lam:.3g}")
        return deliver
    return Verdict((nxt, len(observations)), None,
                   f"escalated to '{names[nxt]}' ({cost[nxt]:.3g} s/image): '{names[kept[0]]}' scored {value}, and "
                   f"'{names[nxt]}' is expected to add more than its cost at cost weight {lam:.3g}")


MAX_OBSERVATION_BYTES = 1 << 20  # one line of an observations file
MAX_OBSERVATIONS = 1_000_000  # lines of one observations file


def read_observations(path, names: list[str]) -> dict[str, list[tuple[int, object, float]]]:
    """``route --observed``: JSON Lines ``{"prompt", "candidate", "seed", "score"}``, one per image already
    generated, into {prompt: [(candidate index, seed, score), ...]} in file order. A line that is not
    such an object, names a candidate the router does not have, or repeats a (prompt, candidate, seed)
    is an error naming the line; blank lines are skipped."""
    import json

    from .errors import DataError
    from .storage.files import open_regular
    from .storage.lines import bounded_lines
    from .validate import finite

    out: dict[str, list[tuple[int, object, float]]] = {}
    seen: set[tuple[str, int, str]] = set()
    with open_regular(path, "observations file", DataError) as fh:
        for lineno, raw in bounded_lines(fh, MAX_OBSERVATION_BYTES):
            where = f"{path}:{lineno}"
            if lineno > MAX_OBSERVATIONS:
                raise DataError(f"{path}: more than {MAX_OBSERVATIONS:,} lines (the limit of one observations file)")
            if raw is None:
                raise DataError(f"{where}: line longer than {MAX_OBSERVATION_BYTES >> 20} MiB")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: not valid UTF-8") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError):
                raise DataError(f"{where}: not a JSON object") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: not a JSON object")
            prompt, cand, seed = obj.get("prompt"), obj.get("candidate"), obj.get("seed", 0)
            if not isinstance(prompt, str) or not isinstance(cand, str):
                raise DataError(f"{where}: 'prompt' and 'candidate' must be strings")
            if cand not in names:
                raise DataError(f"{where}: candidate {cand[:200]!r} is not in the router; it has {names}")
            if isinstance(seed, bool) or not isinstance(seed, (int, str)) or len(str(seed)) > 100:
                raise DataError(f"{where}: 'seed' must be an integer or a short string")
            score = finite(obj.get("score"), "'score'", error=DataError, where=where)
            key = (prompt, names.index(cand), str(seed))
            if key in seen:
                raise DataError(f"{where}: the image of {cand!r} with seed {seed!r} for this prompt is given twice")
            seen.add(key)
            out.setdefault(prompt, []).append((names.index(cand), seed, score))
    return out
