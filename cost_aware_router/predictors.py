"""Quality predictors: every candidate's expected (normalised) quality for a prompt embedding.

All predictors share one small interface (``fit``, ``predict``, ``state``/``from_state``) and
one safeguard: predictions are shrunk toward each candidate's mean quality by a factor
``alpha`` in [0, 1] chosen by cross-validation on routing utility, so that where the data
carry no per-prompt signal the router falls back to the best fixed candidate instead of
chasing noise. Targets are normalised scores with NaN where a candidate was not scored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import RouterError

Progress = Callable[[int, int], None] | None
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SE_MARGIN = 2.0  # standard errors a setting must beat the best fixed candidate by


def column_means(Y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        mu = np.nanmean(Y, axis=0)
    return np.nan_to_num(mu, nan=0.0)


def lambda_grid(mu: np.ndarray, cost: np.ndarray, n: int = 48) -> np.ndarray:
    """Cost weights (quality units per second) spanning every trade-off between candidates."""
    slopes = []
    for i in range(len(cost)):
        for j in range(len(cost)):
            if cost[i] > cost[j] and mu[i] > mu[j]:
                slopes.append((mu[i] - mu[j]) / (cost[i] - cost[j]))
    spread = float(np.ptp(cost)) or 1.0
    lo, hi = (min(slopes), max(slopes)) if slopes else (1.0 / spread, 1.0 / spread)
    lo, hi = max(lo / 20.0, 1e-9), max(hi * 20.0, 2e-9)
    # the last weight is large enough that only cost matters: the cheapest operating point
    return np.concatenate([[0.0], np.geomspace(lo, hi, n - 2), [hi * 1e6]])


def choose(pred: np.ndarray, cost: np.ndarray, lam, allowed: np.ndarray | None = None) -> np.ndarray:
    """argmax over candidates of pred - lam * cost (``lam`` one weight, or one per row); ties go to
    the cheaper candidate. Where lam > 1 the same argmax is taken of pred / lam - cost, so no weight up
    to the largest float overflows (a huge weight picks the cheapest allowed candidate), without warnings."""
    lam = np.asarray(lam, dtype=float).reshape(-1, 1)
    big = lam > 1
    util = np.where(big, pred / np.where(big, lam, 1.0), pred) - np.where(big, 1.0, lam) * cost[None, :]
    if allowed is not None:
        util = np.where(allowed[None, :], util, -np.inf)
    # break exact ties toward lower cost
    util = util - 1e-12 * cost[None, :]
    return np.argmax(util, axis=1)


def prompt_utility(pred: np.ndarray, Y: np.ndarray, cost: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """Per prompt, realised utility (true quality - lam * cost) of the choices, summed over ``lambdas``."""
    rows = np.arange(len(Y))
    total = np.zeros(len(Y))
    for lam in lambdas:
        ch = choose(pred, cost, lam)
        total += Y[rows, ch] - lam * cost[ch]
    return total


def significant_best(base: np.ndarray, options, margin: float | None = None) -> tuple[object, object]:
    """``options`` yields (key, per-prompt utility). Returns (the key with the highest mean gain
    over the per-prompt utility ``base`` among those beating it by more than SE_MARGIN standard
    errors, or None; the key with the highest mean gain at all)."""
    best, top = (None, 0.0), (None, -np.inf)
    for key, util in options:
        diff = util - base
        gain, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
        if gain > top[1]:
            top = (key, gain)
        if gain - (SE_MARGIN if margin is None else margin) * se > 0 and gain > best[1]:
            best = (key, gain)
    return best[0], top[0]


def kfold(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    folds = max(2, min(folds, n))
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i::folds] for i in range(folds)]


def knn_mean(sims: np.ndarray, Y: np.ndarray, k: int, mu: np.ndarray, D: np.ndarray | None = None,
             row_w: np.ndarray | None = None) -> np.ndarray:
    """Similarity-weighted mean of ``Y``'s rows over each query's ``k`` most similar columns of ``sims``
    (weights clipped at 1e-3, so -inf leaves a neighbour out); NaN cells are skipped, and a column
    with no scored neighbour gets ``mu``.

    With a per-row difficulty ``D`` [N] (a memory learnt from bandit feedback, ``online.py``), each
    candidate's mean is taken over its neighbours' *relative* scores ``Y - D`` (each row weighted
    also by ``row_w``), and the neighbours' mean difficulty (similarity weights only) is added back:
    so the candidates compare on what they did relative to each prompt's difficulty, whichever
    prompts each was scored on. For rows that score every candidate, with ``D`` their own mean,
    this is exactly the plain mean."""
    k = max(1, min(k, sims.shape[1]))
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(sims, idx, axis=1), 1e-3, None)[:, :, None]  # [N,k,1]
    y = Y[idx]  # [N,k,C]
    m = ~np.isnan(y)
    if D is None:
        num = (np.where(m, y, 0.0) * w).sum(1)
        den = (m * w).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1e-12), mu[None, :])
    d = np.asarray(D, dtype=np.float64)[idx][:, :, None]  # [N,k,1]
    wr = w * (1.0 if row_w is None else np.asarray(row_w, dtype=np.float64)[idx][:, :, None])
    num = (np.where(m, y - d, 0.0) * wr).sum(1)
    den = (m * wr).sum(1)
    dbar = (d * w).sum(1) / w.sum(1)  # [N,1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12) + dbar, mu[None, :])


def memory_row_weights(Y: np.ndarray, partial_weight: float) -> np.ndarray:
    """Weight of each memory row in a relative (difficulty-corrected) kNN mean: 1 for a row that
    scores every candidate, ``partial_weight`` for a row learnt from bandit feedback."""
    return np.where((~np.isnan(Y)).all(axis=1), 1.0, float(partial_weight))


class Predictor:
    kind = "base"

    def __init__(self, **params):
        self.params = dict(params)
        self.alpha = float(params.get("alpha", 1.0))
        self.mu = None
        self.D = self.RW = None  # kNN memory only: row difficulties learnt from bandit feedback (online.py)
        self.cnt = self.probes = None  # kNN memory learnt from feedback: cell counts and probe lists (memory.py)
        self.D_plain = None  # a plain memory's row difficulties, kept for its next choice of variant (online.py)

    # -- interface -------------------------------------------------------------------
    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray, folds: int = 5, seed: int = 0,
            progress: Progress = None) -> np.ndarray:
        """Fit, choosing hyper-parameters by cross-validation. Returns out-of-fold predictions
        for the training prompts (used to calibrate budgets)."""
        raise NotImplementedError

    def _raw(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = self._raw(np.asarray(X, dtype=np.float32))
        return self.mu[None, :] + self.alpha * (raw - self.mu[None, :])

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors, params = self._state()
        tensors["mu"] = np.array(self.mu)  # a copy, made float32 when saved (router_file, which checks it fits)
        params = {**params, "alpha": self.alpha}
        return tensors, params

    def _state(self) -> tuple[dict[str, np.ndarray], dict]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], params: dict) -> Predictor:
        obj = cls(**params)
        obj.mu = np.asarray(tensors["mu"], dtype=np.float64)
        obj._load(tensors)
        return obj

    def _load(self, tensors: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- shared helpers --------------------------------------------------------------
    def _select(self, oofs: dict, Y: np.ndarray, cost: np.ndarray):
        """Pick (hyper-parameter, alpha) from out-of-fold predictions by routing utility.

        alpha = 0 (always the best fixed candidate for the cost weight) is kept unless a
        setting beats it by more than SE_MARGIN standard errors over prompts: with thin evidence the
        router does not chase noise.
        """
        first = next(iter(oofs))
        complete = ~np.isnan(Y).any(axis=1) & ~np.isnan(oofs[first]).any(axis=1)
        if complete.sum() < 8:
            return first, 0.0
        Yc, lams = Y[complete], lambda_grid(self.mu, cost)
        base = prompt_utility(np.tile(self.mu, (len(Yc), 1)), Yc, cost, lams)
        best, top = significant_best(base, (((param, a), prompt_utility(self.mu + a * (oof[complete] - self.mu), Yc,
                                                                          cost, lams))
                                            for param, oof in oofs.items() for a in ALPHAS[1:]))
        # without a significant gain keep alpha = 0 but record the most promising setting
        return best if best is not None else (top[0], 0.0)


# ---------------------------------------------------------------------------------------
# the kNN memory: knn_x [N, d], knn_y [N, C] (NaN = unscored), and, once it has learnt from bandit
# feedback (online.py), knn_d [N] (each row's difficulty) with the param partial_weight; a memory
# learnt by this version also keeps knn_n [N, C] (cells merged into each scored cell) and its probe
# lists knn_probe [P], knn_nbr [P, W], knn_nbs [P, W] (memory.py); a plain one its rows' difficulties
# as knn_dp [N] (not used to predict)
PROBE_TENSORS = ("knn_probe", "knn_nbr", "knn_nbs")


def memory_predict(pred: Predictor, X: np.ndarray, k: int) -> np.ndarray:
    return knn_mean(X @ pred.X.T, pred.Y.astype(np.float64), k, pred.mu, pred.D, pred.RW)


def memory_state(pred: Predictor, params: dict) -> tuple[dict, dict]:
    tensors = {"knn_x": pred.X, "knn_y": pred.Y}
    if pred.D is not None:
        tensors["knn_d"] = pred.D
        params = {**params, "partial_weight": float(pred.params["partial_weight"])}
    if pred.D_plain is not None:
        tensors["knn_dp"] = pred.D_plain
    if pred.cnt is not None:
        tensors["knn_n"] = pred.cnt
    if pred.probes is not None:
        tensors.update(zip(PROBE_TENSORS, pred.probes))
    return tensors, params


def memory_load(pred: Predictor, tensors: dict) -> None:
    pred.X = np.asarray(tensors["knn_x"], dtype=np.float32)
    pred.Y = np.asarray(tensors["knn_y"], dtype=np.float32)
    pred.D = np.asarray(tensors["knn_d"], dtype=np.float32) if tensors.get("knn_d") is not None else None
    pred.RW = None if pred.D is None else memory_row_weights(pred.Y, float(pred.params.get("partial_weight", 1.0)))
    pred.cnt = np.asarray(tensors["knn_n"], dtype=np.float32) if tensors.get("knn_n") is not None else None
    pred.D_plain = np.asarray(tensors["knn_dp"], dtype=np.float32) if tensors.get("knn_dp") is not None else None
    pred.probes = None
    if all(tensors.get(t) is not None for t in PROBE_TENSORS):
        probe, nbr, nbs = (tensors[t] for t in PROBE_TENSORS)
        pred.probes = (np.asarray(probe).astype(np.int64), np.asarray(nbr).astype(np.int64),
                       np.asarray(nbs, dtype=np.float32))


# ---------------------------------------------------------------------------------------
class KNNPredictor(Predictor):
    kind = "knn"
    K_GRID = (1, 2, 4, 8, 16, 32, 64, 128)

    def fit(self, X, Y, cost, folds=5, seed=0, progress=None):
        X = np.asarray(X, dtype=np.float32)
        self.mu = column_means(Y)
        n = len(X)
        sims = X @ X.T
        parts = kfold(n, folds, seed)
        grid = [k for k in self.K_GRID if k < n] or [1]
        oofs = {k: np.zeros_like(Y, dtype=np.float64) for k in grid}
        for f, test in enumerate(parts):
            train = np.setdiff1d(np.arange(n), test)
            mu_tr = column_means(Y[train])
            s = sims[np.ix_(test, train)]
            for k in grid:
                oofs[k][test] = knn_mean(s, Y[train], k, mu_tr)
            if progress:
                progress(f + 1, len(parts) + 1)
        self.k, self.alpha = self._select(oofs, Y, cost)
        self.params.update(k=self.k)
        self.X, self.Y = X, np.asarray(Y, dtype=np.float32)
        if progress:
            progress(len(parts) + 1, len(parts) + 1)
        return self.mu + self.alpha * (oofs[self.k] - self.mu)

    def _raw(self, X):
        return memory_predict(self, X, int(self.params["k"]))

    def _state(self):
        return memory_state(self, {"k": int(self.params["k"])})

    def _load(self, tensors):
        memory_load(self, tensors)
        self.k = int(self.params["k"])


# ---------------------------------------------------------------------------------------
class RidgePredictor(Predictor):
    kind = "ridge"
    PENALTIES = (0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0)

    @staticmethod
    def _solve(X, Y, mu, penalty):
        d, C = X.shape[1], Y.shape[1]
        W = np.zeros((d, C))
        for c in range(C):
            m = ~np.isnan(Y[:, c])
            if m.sum() == 0:
                continue
            Xc = X[m].astype(np.float64)
            W[:, c] = np.linalg.solve(Xc.T @ Xc + penalty * np.eye(d), Xc.T @ (Y[m, c] - mu[c]))
        return W

    def fit(self, X, Y, cost, folds=5, seed=0, progress=None):
        X = np.asarray(X, dtype=np.float32)
        self.mu = column_means(Y)
        n = len(X)
        parts = kfold(n, folds, seed)
        oofs = {r: np.zeros_like(Y, dtype=np.float64) for r in self.PENALTIES}
        for f, test in enumerate(parts):
            train = np.setdiff1d(np.arange(n), test)
            mu_tr = column_means(Y[train])
            for r in self.PENALTIES:
                W = self._solve(X[train], Y[train], mu_tr, r)
                oofs[r][test] = mu_tr + X[test] @ W
            if progress:
                progress(f + 1, len(parts) + 1)
        r, self.alpha = self._select(oofs, Y, cost)
        self.params.update(penalty=r)
        self.W = self._solve(X, Y, self.mu, r).astype(np.float32)
        if progress:
            progress(len(parts) + 1, len(parts) + 1)
        return self.mu + self.alpha * (oofs[r] - self.mu)

    def _raw(self, X):
        return self.mu[None, :] + X.astype(np.float64) @ self.W.astype(np.float64)

    def _state(self):
        return {"ridge_w": self.W}, {"penalty": float(self.params["penalty"])}

    def _load(self, tensors):
        self.W = np.asarray(tensors["ridge_w"], dtype=np.float32)


# ---------------------------------------------------------------------------------------
class MLPPredictor(Predictor):
    kind = "mlp"
    HIDDEN = 256

    def _net(self, d, C):
        import torch

        return torch.nn.Sequential(
            torch.nn.Linear(d, self.HIDDEN), torch.nn.GELU(), torch.nn.Dropout(0.1),
            torch.nn.Linear(self.HIDDEN, C),
        )

    def fit(self, X, Y, cost, folds=5, seed=0, progress=None, epochs: int = 200):
        import torch

        X = np.asarray(X, dtype=np.float32)
        self.mu = column_means(Y)
        n, d = X.shape
        C = Y.shape[1]
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        n_val = max(1, n // 5) if n >= 10 else 0
        val, train = perm[:n_val], perm[n_val:]
        torch.manual_seed(seed)
        with torch.inference_mode(False), torch.enable_grad():
            net = self._net(d, C)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
            xt = torch.from_numpy(X)
            resid = np.nan_to_num(Y - self.mu[None, :], nan=0.0).astype(np.float32)
            yt = torch.from_numpy(resid)
            mt = torch.from_numpy((~np.isnan(Y)).astype(np.float32))
            best = (float("inf"), None, 0)
            batch = 256
            for epoch in range(epochs):
                net.train()
                order = torch.from_numpy(rng.permutation(train))
                for s in range(0, len(order), batch):
                    b = order[s:s + batch]
                    loss = (((net(xt[b]) - yt[b]) ** 2) * mt[b]).sum() / mt[b].sum().clamp(min=1)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                if n_val:
                    net.eval()
                    with torch.no_grad():
                        vl = float((((net(xt[val]) - yt[val]) ** 2) * mt[val]).sum() / mt[val].sum().clamp(min=1))
                    if vl < best[0]:
                        best = (vl, {k: v.clone() for k, v in net.state_dict().items()}, epoch)
                    elif epoch - best[2] > 20:
                        if progress:
                            progress(epochs, epochs)
                        break
                if progress:
                    progress(epoch + 1, epochs)
            if best[1] is not None:
                net.load_state_dict(best[1])
            net.eval()
        self.net = net
        self.params.update(hidden=self.HIDDEN, dim=d, outputs=C)
        oof = np.tile(self.mu, (n, 1))
        if n_val:
            oof[val] = self._raw(X[val])
            yv = np.full_like(Y, np.nan)
            yv[val] = Y[val]
            _, self.alpha = self._select({"mlp": oof}, yv, cost)
        else:
            self.alpha = 0.0
        # calibrate on validation prompts only (others would be in-sample)
        full = np.full_like(oof, np.nan)
        full[val] = self.mu + self.alpha * (oof[val] - self.mu)
        return full

    def _raw(self, X):
        import torch

        with torch.inference_mode():
            return self.mu[None, :] + self.net(torch.from_numpy(np.ascontiguousarray(X))).double().numpy()

    def _state(self):
        return ({f"mlp.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()},
                {"hidden": self.HIDDEN, "dim": int(self.params["dim"]), "outputs": int(self.params["outputs"])})

    def _load(self, tensors):
        import torch

        self.net = self._net(int(self.params["dim"]), int(self.params["outputs"]))
        sd = {k[4:]: torch.from_numpy(np.asarray(v)) for k, v in tensors.items() if k.startswith("mlp.")}
        try:
            self.net.load_state_dict(sd)
        except RuntimeError as exc:
            raise RouterError(f"MLP weights do not match their recorded shape: {str(exc).splitlines()[0]}") from None
        self.net.eval()


# ---------------------------------------------------------------------------------------
def ridge_weights(X: np.ndarray, R: np.ndarray, penalties) -> dict:
    """Ridge weights [d, C] for residual targets R (NaN = not scored), one matrix per penalty.

    Complete targets share one SVD across columns and penalties; otherwise each column is
    solved on its scored rows."""
    X = X.astype(np.float64)
    d, C = X.shape[1], R.shape[1]
    out = {}
    if not np.isnan(R).any():
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        UtR = U.T @ R
        for p in penalties:
            out[p] = Vt.T @ ((s / (s * s + p))[:, None] * UtR)
        return out
    out = {p: np.zeros((d, C)) for p in penalties}
    for c in range(C):
        m = ~np.isnan(R[:, c])
        if m.any():
            e, V = np.linalg.eigh(X[m].T @ X[m])
            VtXr = V.T @ (X[m].T @ R[m, c])
            for p in penalties:
                out[p][:, c] = V @ (VtXr / (np.clip(e, 0.0, None) + p))
    return out


class KNNOrRidgePredictor(Predictor):
    kind = "knn_or_ridge"
    K_GRID = (32, 64, 128)
    PENALTIES = (1.0, 3.0, 10.0, 30.0, 100.0)
    REPEATS = 3

    # -- cross-validation ------------------------------------------------------------
    def _fold(self, Xtr, Ytr, mu, Xte) -> dict:
        out = {}
        sims = Xte @ Xtr.T
        for k in self.K_GRID:
            if k < len(Xtr):
                out[("knn", float(k))] = knn_mean(sims, Ytr, k, mu)
        if not out:  # fewer training prompts than the smallest k: every one of them
            out[("knn", float(len(Xtr)))] = knn_mean(sims, Ytr, len(Xtr), mu)
        for p, W in ridge_weights(Xtr, Ytr - mu, self.PENALTIES).items():
            out[("ridge", p)] = mu + Xte.astype(np.float64) @ W
        return out

    def _oofs(self, X, Y, folds, seed, progress=None) -> tuple[dict, dict]:
        """Out-of-fold predictions per setting: averaged over the repeats (to choose a setting) and
        from the first repeat alone (to calibrate budgets: averages spread less than one model's
        predictions on new prompts, so a calibration on them overspends)."""
        n = len(X)
        acc: dict = {}
        first: dict = {}
        steps = self.REPEATS * max(2, min(folds, n))
        done = 0
        for r in range(self.REPEATS):
            for test in kfold(n, folds, seed + 7919 * r):
                train = np.setdiff1d(np.arange(n), test)
                for key, pred in self._fold(X[train], Y[train], column_means(Y[train]), X[test]).items():
                    acc.setdefault(key, np.zeros(Y.shape))[test] += pred / self.REPEATS
                    if r == 0:
                        first.setdefault(key, np.zeros(Y.shape))[test] = pred
                done += 1
                if progress:
                    progress(done, steps + 1)
        return acc, first

    def fit(self, X, Y, cost, folds=5, seed=0, progress=None):
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float64)
        self.mu = column_means(Y)
        oofs, first = self._oofs(X, Y, folds, seed, progress)
        (family, value), self.alpha = self._select(oofs, Y, cost)
        self.params.update(family=family, value=float(value))
        self._refit(X, Y)
        if progress:
            progress(1, 1)
        return self.mu + self.alpha * (first[(family, value)] - self.mu)

    def _refit(self, X, Y) -> None:
        if self.params["family"] == "ridge":
            p = float(self.params["value"])
            self.W = ridge_weights(X, Y - self.mu, [p])[p].astype(np.float32)
        else:
            self.X, self.Y = X.astype(np.float32), Y.astype(np.float32)

    # -- prediction and state --------------------------------------------------------
    def _raw(self, X):
        if self.params["family"] == "ridge":
            return self.mu[None, :] + X.astype(np.float64) @ self.W.astype(np.float64)
        return memory_predict(self, X, int(self.params["value"]))

    def _state(self):
        params = {"family": str(self.params["family"]), "value": float(self.params["value"])}
        if params["family"] == "ridge":
            return {"ridge_w": self.W}, params
        return memory_state(self, params)

    def _load(self, tensors):
        if self.params["family"] == "ridge":
            self.W = np.asarray(tensors["ridge_w"], dtype=np.float32)
        else:
            memory_load(self, tensors)


PREDICTORS: dict[str, type[Predictor]] = {
    p.kind: p for p in (KNNPredictor, RidgePredictor, MLPPredictor, KNNOrRidgePredictor)}


def get_predictor_class(name: str) -> type[Predictor]:
    try:
        return PREDICTORS[name]
    except KeyError:
        raise RouterError(f"unknown predictor '{name}'; choose one of {sorted(PREDICTORS)}") from None
