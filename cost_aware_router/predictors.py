"""Quality predictors: every candidate's expected (normalised) quality for a prompt embedding.

All predictors share one small interface (``fit``, ``predict``, ``state``/``from_state``) and
one safeguard: predictions are shrunk toward each candidate's mean quality by a factor
``alpha`` in [0, 1] chosen by cross-validation on routing utility (``significance.py``), so that
where the data carry no per-prompt signal the router falls back to the best fixed candidate instead
of chasing noise. Targets are normalised scores with NaN where a candidate was not scored.

A kNN-family predictor keeps its rows in ``memory`` (a ``memory.Memory``, which predicts, is stored
and learns from feedback); ``memory`` is None for the others, so nothing needs to ask a predictor's kind.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .decision.rule import choose
from .errors import RouterError
from .memory import K_GRID, Memory, knn_mean
from .significance import ALPHAS, significant_best

Progress = Callable[[int, int], None] | None


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


def prompt_utility(pred: np.ndarray, Y: np.ndarray, cost: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """Per prompt, realised utility (true quality - lam * cost) of the choices, summed over ``lambdas``."""
    rows = np.arange(len(Y))
    total = np.zeros(len(Y))
    for lam in lambdas:
        ch = choose(pred, cost, lam)
        total += Y[rows, ch] - lam * cost[ch]
    return total


def kfold(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    folds = max(2, min(folds, n))
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i::folds] for i in range(folds)]


class Predictor:
    kind = "base"
    fit_effort = 7.0  # the fit's share of a training run's progress bar, against 3 for embedding the prompts
    K_PARAM: str | None = None  # the param holding k, in a predictor that can keep a kNN memory

    def __init__(self, **params):
        self.params = dict(params)
        self.alpha = float(params.get("alpha", 1.0))
        self.mu = None
        self.memory: Memory | None = None  # the kNN memory (memory.py) of a kNN-family predictor; None otherwise

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

    def describe(self) -> str:
        return f"predictor '{self.kind}'"

    # -- the kNN memory (memory.py), of a predictor whose ``memory`` is not None ------
    @property
    def neighbours(self) -> int:
        """The k its kNN memory predicts with."""
        return int(float(self.params[self.K_PARAM]))

    def _memory_params(self, k: int) -> dict:
        raise NotImplementedError

    def with_memory(self, memory: Memory, k: int, alpha: float, mu: np.ndarray) -> Predictor:
        """A predictor like this one predicting from ``memory`` with ``k`` neighbours, shrinkage ``alpha`` and
        candidate means ``mu``, built from what a router file stores (float32), so a saved copy predicts the same."""
        tensors, params = memory.state({**self._memory_params(k), "alpha": alpha})
        return type(self).from_state({**tensors, "mu": np.asarray(mu).astype(np.float32)}, params)

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
class KNNPredictor(Predictor):
    kind = "knn"
    fit_effort = 2.0  # a kNN fit is quick next to embedding
    K_PARAM = "k"
    K_GRID = K_GRID

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
        self.memory = Memory(X, np.asarray(Y, dtype=np.float32))
        if progress:
            progress(len(parts) + 1, len(parts) + 1)
        return self.mu + self.alpha * (oofs[self.k] - self.mu)

    def _raw(self, X):
        return self.memory.predict(X, int(self.params["k"]), self.mu)

    def _memory_params(self, k):
        return {"k": int(k)}

    def _state(self):
        return self.memory.state(self._memory_params(self.params["k"]))

    def _load(self, tensors):
        self.memory = Memory.from_tensors(tensors, self.params)
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
    K_PARAM = "value"
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
            self.memory = Memory(X.astype(np.float32), Y.astype(np.float32))

    # -- prediction and state --------------------------------------------------------
    def describe(self) -> str:
        return f"predictor '{self.kind}' ({self.params.get('family')} family)"

    def _memory_params(self, k):
        return {"family": "knn", "value": float(k)}

    def _raw(self, X):
        if self.params["family"] == "ridge":
            return self.mu[None, :] + X.astype(np.float64) @ self.W.astype(np.float64)
        return self.memory.predict(X, int(self.params["value"]), self.mu)

    def _state(self):
        params = {"family": str(self.params["family"]), "value": float(self.params["value"])}
        if params["family"] == "ridge":
            return {"ridge_w": self.W}, params
        return self.memory.state(params)

    def _load(self, tensors):
        if self.params["family"] == "ridge":
            self.W = np.asarray(tensors["ridge_w"], dtype=np.float32)
        else:
            self.memory = Memory.from_tensors(tensors, self.params)


PREDICTORS: dict[str, type[Predictor]] = {
    p.kind: p for p in (KNNPredictor, RidgePredictor, MLPPredictor, KNNOrRidgePredictor)}


def get_predictor_class(name: str) -> type[Predictor]:
    try:
        return PREDICTORS[name]
    except KeyError:
        raise RouterError(f"unknown predictor '{name}'; choose one of {sorted(PREDICTORS)}") from None
