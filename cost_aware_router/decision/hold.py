"""Hold a target average cost per image on any prompt stream.

``Router.choices`` meets a target average cost B by reading the cost weight ``lam`` off a
calibration curve measured on the training prompts. On another prompt distribution the same
``lam`` spends a different amount (the shipped router at 2 s/image: 2.05 s on DiffusionDB, 1.20 s
on COCO). :class:`BudgetHolder` sets ``lam`` prompt by prompt from what the stream itself has
done, so the realised average stays at B whatever the prompts are and in whatever order they come.

The rule for the next prompt's ``lam`` (``lam()``; ``loop.decide`` chooses with it and records the
choice with ``observe``):

1. **Trade-off window.** For each recent prompt whose predicted qualities were given
   (``observe(cost, z_row=...)``, as ``loop.decide`` calls it) the holder keeps the exact cost that
   ``argmax_c z_c - lam * cost_c`` would have as a function of ``lam``: a falling step function
   whose steps are where the upper hull of the lines ``z_c - lam * cost_c`` changes candidate. Their
   average, each prompt weighted by age (half-life ``HALF_LIFE`` prompts, at most ``WINDOW`` kept),
   is the stream's recent cost curve.
2. **Debt.** ``debt`` is what the stream has spent beyond the target so far, in seconds. The next
   prompts aim at ``B - debt / horizon``: a debt (or a saving) is paid back over ``horizon``
   prompts, ``HORIZON_SHARE`` of the prompts so far within [``HORIZON_MIN``, ``HORIZON_MAX``]
   (an average over few prompts moves a lot, so early debts are settled fast).
3. ``lam`` is where the recent cost curve crosses that aim (interpolated in log ``lam`` between
   neighbouring steps), times ``exp(trim)``: ``trim`` integrates ``cost - aim`` slowly (a small
   correction for a window that lags a shift in the prompt mix). There is no gain to tune against
   the steepness of spending in ``lam``, which varies by orders of magnitude between routers,
   targets and corpora: the curve is read off the prompts themselves. With an empty window the
   prompt's own trade-off is used; with a short one ``lam`` is blended in log space with the
   calibrated ``start_lam``, which stops counting after ``PRIOR_PROMPTS`` prompts.
4. **Saturation.** An aim at or above what the recent prompts' best-quality choices cost gives
   ``lam = 0``; one below what their cheapest choices cost gives ``SATURATE`` times the largest
   step (all on their cheapest). The debt is kept within what ``DEBT_CAP`` prompts can pay back
   (zero when the target is below the cheapest candidate or above the dearest), so an unreachable
   target neither winds up nor overflows; ``lam`` is always finite and >= 0.

5. **Escalations.** A verified prompt whose image is escalated (``cascade.py``) spends a second image;
   ``add_cost`` adds it to the total and the debt without counting a new prompt, and keeps an
   age-weighted average of that extra spend per prompt, which the window's aim leaves room for (the
   window's curves are the routed image's cost only).

Without predicted qualities (``lam()`` then ``observe(cost)`` only) the holder falls back to
stochastic approximation on ``log lam`` toward the same aim, the error measured in units of its
own running size, boosted geometrically while the choices stay on one side of the aim for longer
than a stream spending the aim would with probability ``PINNED`` (a start far off, found in a few
dozen prompts instead of hundreds). It holds the average too, but must overspend or underspend to
learn, so on short streams with a far start or a cost range of 1000x it misses where the window
does not: give ``z_row`` whenever it is at hand.

``state()`` / ``from_state``: a JSON state (target, router fingerprint, counts, debt, controller
memory, the window's predicted qualities) so a holder survives restarts; a state for another router
or another target is refused. ``hold_state.py`` writes and reads it as a file.
"""

from __future__ import annotations

import math
import numbers
from collections import deque

import numpy as np

from ..errors import RouterError
from ..validate import finite
from .rule import pick

STATE_FORMAT = "cost_aware_router.budget_hold"
STATE_VERSION = 1
WINDOW_MAX = 1000  # the largest window a holder accepts

WINDOW = 200  # prompts whose trade-off curves set lam ...
HALF_LIFE = 50.0  # ... weighted by age: a prompt this many prompts old counts half
TRIM_GAIN = 0.05  # log lam correction per prompt per (cost - aim) / (cost spread)
TRIM_SPAN = 3.0  # |trim| <= this (e-folds)
PRIOR_PROMPTS = 20  # window length at which the calibrated start lam stops counting
HORIZON_MIN = 4.0  # prompts over which a debt is paid back: HORIZON_SHARE * count, within these
HORIZON_MAX = 20.0
HORIZON_SHARE = 0.1
DEBT_CAP = 1000  # prompts: a debt is kept up to what this many prompts on the cheapest candidate pay back,
# a saving up to what this many on the dearest spend (past that the whole-stream average is lost anyway)
EXTRA_WEIGHT = 1.0 - 0.5 ** (1.0 / HALF_LIFE)  # weight of the newest prompt in the escalation spend per prompt
SATURATE = 2.0  # lam beyond the window's largest step when even the cheapest choices overspend

# the cost-only controller (no predicted qualities given): stochastic approximation on log lam
GAIN = 0.05  # log lam moves GAIN * (cost - aim) / (running rms of cost - aim) per prompt ...
BOOST_MAX = 50.0  # ... times a boost that grows while the choices stay on one side of the aim for longer
BOOST_GROW = 1.5  # than a stream spending the aim on average would with probability PINNED (Markov's bound)
BOOST_DECAY = 0.5
PINNED = 0.01
DEV_WEIGHT = 0.05  # weight of the newest squared error in its running mean
DEV_FLOOR = 0.1  # the running rms is kept above this share of the largest rms of costs averaging the target
ZERO_START = 3.0  # a zero start lam begins this many e-folds below the reference
LOG_LAM_SPAN = 14.0  # log lam stays within this many e-folds of the start and the reference


def _costs(cost) -> np.ndarray:
    try:
        c = np.asarray(cost, dtype=np.float64)
    except (TypeError, ValueError):
        raise RouterError("candidate costs must be a list of numbers") from None
    if c.ndim != 1 or len(c) == 0:
        raise RouterError(f"candidate costs must be a non-empty list of numbers, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise RouterError(f"candidate costs must be finite numbers >= 0, got {c.tolist()}")
    return c


def trade_off(z: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None = None
              ) -> tuple[float, np.ndarray, np.ndarray]:
    """The cost of ``argmax_c z_c - lam * cost_c`` (ties to the cheaper) as a function of lam >= 0:
    (cost at lam = 0, the lams where the choice changes, ascending, and the cost drop at each)."""
    ok = np.isfinite(z)
    if allowed is not None:
        ok &= allowed
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        raise RouterError("no candidate is allowed and has a finite predicted quality")
    zz, cc = z[idx], cost[idx]
    j = int(pick(zz, cc))
    c0 = float(cc[j])
    lams, drops = [], []
    lam = 0.0
    while True:
        cheaper = np.nonzero(cc < cc[j])[0]
        if len(cheaper) == 0:
            break
        cross = np.maximum((zz[j] - zz[cheaper]) / (cc[j] - cc[cheaper]), lam)
        first = cross.min()
        tied = cheaper[cross <= first]
        k = int(tied[np.argmin(cc[tied])])  # past a shared crossing the cheapest line is on top
        lams.append(float(first))
        drops.append(float(cc[j] - cc[k]))
        j, lam = k, float(first)
    return c0, np.array(lams), np.array(drops)


class BudgetHolder:
    """Sets the cost weight prompt by prompt so the realised average cost per image stays at ``target``.

    ``target``: seconds per image; ``start_lam``: the calibrated cost weight for that target
    (``Router.budget_mixture(target)``), used until the stream has shown its own trade-offs;
    ``cost``: seconds per image of each candidate, in the router's order; ``router_fingerprint``:
    identifies the router a saved state belongs to; ``state``: a dict from :meth:`state` to resume.
    """

    def __init__(self, target: float, start_lam: float, cost, router_fingerprint: str, state: dict | None = None,
                 *, window: int = WINDOW):
        self._target = finite(target, "target average cost", minimum=0.0)
        self._start = finite(start_lam, "start cost weight", minimum=0.0)
        self._cost = _costs(cost)
        if not isinstance(router_fingerprint, str) or not router_fingerprint.strip():
            raise RouterError("router fingerprint must be a non-empty string")
        self._fingerprint = router_fingerprint
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= WINDOW_MAX:
            raise RouterError(f"window must be a whole number from 1 to {WINDOW_MAX}, got {window!r}")
        self._window = window
        self._rows: deque = deque(maxlen=window)  # (z row, allowed or None)
        self._curves: deque = deque(maxlen=window)  # trade_off of each row
        self._count = 0
        self._total = 0.0
        self._debt = 0.0
        self._extra = 0.0  # recent escalation spend per prompt (age-weighted like the window), see add_cost
        self._log_ref = math.log(self._default_lam())
        self._log_lam = math.log(self._start) if self._start > 0 else self._log_ref - ZERO_START
        self._boost = 1.0
        self._trim = 0.0  # log-lam correction on top of the window's answer (a window lagging a shift)
        lo_c, hi_c = float(self._cost.min()), float(self._cost.max())
        b = min(max(self._target, lo_c), hi_c)
        self._dev2 = (b - lo_c) * (hi_c - b)  # the largest variance of costs averaging b
        self._dev2_floor = max(DEV_FLOOR ** 2 * self._dev2, (1e-3 * (hi_c - lo_c)) ** 2, 1e-300)
        self._dev2 = max(self._dev2, self._dev2_floor)
        self._run = 0.0  # log-probability bound of the current run of choices on one side of the aim (signed)
        self._cached: float | None = None
        if state is not None:
            self._restore(state, "state")

    # -- public ----------------------------------------------------------------------
    @property
    def target(self) -> float:
        return self._target

    @property
    def count(self) -> int:
        return self._count

    @property
    def mean_cost(self) -> float:
        """Realised average cost per image so far (0 before the first prompt)."""
        return self._total / self._count if self._count else 0.0

    @property
    def debt(self) -> float:
        """Seconds spent beyond the target so far (negative: saved), as the controller sees it (clipped)."""
        return self._debt

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def lam(self) -> float:
        """The cost weight for the next prompt (finite, >= 0)."""
        if self._cached is None:
            self._cached = self._compute_lam()
        return self._cached

    def lam_for(self, z_row, allowed=None) -> float:
        """The cost weight for a prompt with predicted qualities ``z_row``: ``lam()``, except that a
        holder with no trade-off in its window yet reads this prompt's own (a fresh holder does not
        start on its prior alone)."""
        z, ok = self.check_row(z_row, allowed)
        if not self._curves:
            self._cached = self._compute_lam([trade_off(z, self._cost, ok)])
        return self.lam()

    def observe(self, cost_of_choice: float, z_row=None, allowed=None) -> None:
        """Record the cost of the candidate chosen for a prompt; give its predicted qualities
        ``z_row`` (and the ``allowed`` mask used, if any) so the holder learns the stream's
        trade-offs, not just its spending."""
        c = finite(cost_of_choice, "cost of the choice", minimum=0.0)
        row = self.check_row(z_row, allowed) if z_row is not None else None
        aim, used = self._aim(), self.lam()
        self._count += 1
        self._extra *= 1.0 - EXTRA_WEIGHT
        self._total += c
        self._debt = float(np.clip(self._debt + c - self._target, *self._debt_range()))
        if self._curves:
            self._update_trim(c, aim)
        if row is not None:
            self._rows.append(row)
            self._curves.append(trade_off(row[0], self._cost, row[1]))
            if used > 0:  # the cost-only rule carries on from here if qualities stop coming
                self._log_lam = float(np.clip(math.log(used), *self._log_span()))
        else:
            self._update_log_lam(c, aim)
        self._cached = None

    def add_cost(self, seconds: float) -> None:
        """Extra spend for a prompt already counted (an escalation: a second image of it, ``cascade.py``):
        the realised average and the debt grow, the prompt count does not, so the next prompts pay it back."""
        c = finite(seconds, "cost of the escalation", minimum=0.0)
        self._total += c
        self._debt = float(np.clip(self._debt + c, *self._debt_range()))
        self._extra = min(self._extra + EXTRA_WEIGHT * c, float(self._cost.sum()))
        self._cached = None

    # -- state -----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "router_fingerprint": self._fingerprint, "target": self._target,
            "start_lam": self._start, "lam": self.lam(),
            "trim": self._trim, "log_lam": self._log_lam, "boost": self._boost, "run": self._run, "dev2": self._dev2,
            "count": self._count, "total_cost": self._total, "debt": self._debt, "extra": self._extra,
            "cost": self._cost.tolist(), "window": self._window,
            "rows": [[[v if math.isfinite(v) else None for v in r[0].tolist()],
                      None if r[1] is None else r[1].astype(int).tolist()] for r in self._rows],
        }

    @classmethod
    def from_state(cls, state: dict, router_fingerprint: str, target: float, cost=None, start_lam: float | None = None,
                   where: str = "state") -> BudgetHolder:
        """A holder resumed from ``state``; refuses a state for another router or another target.
        ``cost`` defaults to the costs in the state (give the router's, which may have been re-measured)."""
        if not isinstance(state, dict):
            raise RouterError(f"{where} is not a budget-holder state (not a JSON object)")
        _check_header(state, where)
        saved_cost = state.get("cost")
        if not isinstance(saved_cost, list):
            raise RouterError(f"{where} is not a valid budget-holder state: no list of candidate costs")
        n_given = None if cost is None else len(np.atleast_1d(np.asarray(cost, dtype=object)))
        if n_given is not None and len(saved_cost) != n_given:
            raise RouterError(f"{where} was made for {len(saved_cost)} candidates, not {n_given}; "
                              "delete it or use another state file")
        cost = saved_cost if cost is None else cost
        start = state.get("start_lam") if start_lam is None else start_lam
        window = state.get("window", WINDOW)
        try:
            holder = cls(target, start, cost, router_fingerprint, window=window)
        except RouterError as exc:
            raise RouterError(f"{where} is not a valid budget-holder state: {exc}") from None
        holder._restore(state, where)
        return holder

    # -- internals -------------------------------------------------------------------
    def _default_lam(self) -> float:
        """A reference cost weight when none is given: a tenth of a quality unit per cost spread."""
        spread = float(self._cost.max() - self._cost.min())
        return 0.1 / spread if spread > 0 else 1.0

    def _debt_range(self) -> tuple[float, float]:
        lo_c, hi_c = float(self._cost.min()), float(self._cost.max())
        return -DEBT_CAP * max(hi_c - self._target, 0.0), DEBT_CAP * max(self._target - lo_c, 0.0)

    def _horizon(self) -> float:
        return float(np.clip(HORIZON_SHARE * self._count, HORIZON_MIN, HORIZON_MAX))

    def _aim(self) -> float:
        return self._target - self._debt / self._horizon()

    def check_row(self, z_row, allowed=None) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            z = np.asarray(z_row, dtype=np.float64)
        except (TypeError, ValueError):
            raise RouterError("predicted qualities must be numbers") from None
        if z.shape != self._cost.shape:
            raise RouterError(f"predicted qualities must have one value per candidate ({len(self._cost)}), "
                              f"got shape {z.shape}")
        if np.isnan(z).any() or np.isposinf(z).any():
            raise RouterError("predicted qualities must be finite (or -inf for an excluded candidate)")
        ok = None
        if allowed is not None:
            ok = np.asarray(allowed, dtype=bool)
            if ok.shape != self._cost.shape:
                raise RouterError(f"allowed must have one flag per candidate ({len(self._cost)}), got shape {ok.shape}")
        if not (np.isfinite(z) & (ok if ok is not None else True)).any():
            raise RouterError("no candidate is allowed and has a finite predicted quality")
        return z, ok

    def _window_lam(self, aim: float, curves: list) -> tuple[float | None, bool]:
        """Where the recency-weighted average cost curve of ``curves`` (oldest first) crosses ``aim``
        (None when no curve has a step), and whether the aim is out of its reach (lam saturated)."""
        n = len(curves)
        w = 0.5 ** (np.arange(n - 1, -1, -1) / HALF_LIFE)
        w /= w.sum()
        c0 = float(np.dot(w, [cv[0] for cv in curves]))
        if aim >= c0:
            return 0.0, True
        lams = np.concatenate([cv[1] for cv in curves])
        if len(lams) == 0:
            return None, True
        drops = np.concatenate([cv[2] for cv in curves]) * np.repeat(w, [len(cv[1]) for cv in curves])
        order = np.argsort(lams, kind="stable")
        lams, after = lams[order], c0 - np.cumsum(drops[order])  # average just past each step
        k = int(np.searchsorted(-after, -aim, side="left"))  # first step whose average is <= aim
        if k >= len(lams):
            return float(SATURATE * max(lams[-1], 1e-12)), True
        if k == 0 or lams[k - 1] <= 0:
            return float(lams[k]), False
        frac = (after[k - 1] - aim) / max(after[k - 1] - after[k], 1e-300)
        lo, hi = math.log(lams[k - 1]), math.log(lams[k])
        return float(math.exp(lo + min(max(frac, 0.0), 1.0) * (hi - lo))), False

    def _compute_lam(self, curves: list | None = None) -> float:
        curves = list(self._curves) if curves is None else curves
        if curves:
            # the window's curves are the routed image's cost; escalations spend on top of it
            lam, saturated = self._window_lam(self._aim() - self._extra, curves)
            if lam is not None:
                if saturated:  # best quality for all, or the cheapest for all: no prior or trim changes that
                    return _finite_lam(lam)
                w = min(1.0, len(curves) / PRIOR_PROMPTS)
                if w < 1.0 and self._start > 0:  # a zero start is no prior: it only means "best quality"
                    lam = math.exp(w * math.log(max(lam, 1e-300)) + (1 - w) * math.log(self._start))
                return _finite_lam(lam * math.exp(self._trim))
        if self._start == 0 and self._count == 0:
            return 0.0
        return _finite_lam(math.exp(self._log_lam))

    def _update_log_lam(self, cost: float, aim: float) -> None:
        """The cost-only rule: stochastic approximation on log lam toward spending ``aim``, boosted
        while the choices stay on one side of the aim for improbably long (a start far from the target),
        and with no wind-up past what the candidates can spend."""
        lo_c, hi_c = float(self._cost.min()), float(self._cost.max())
        if hi_c <= lo_c:  # every candidate costs the same: lam changes nothing
            return
        spread = hi_c - lo_c
        aim = min(max(aim, lo_c), hi_c)
        # a choice dearer than the aim has probability <= (aim - lo) / (cost - lo) when the average is the
        # aim, a cheaper one <= (hi - aim) / (hi - cost); a run multiplies them. While a debt is paid (aim
        # at the cheapest) dear choices are still tested, against an aim no lower than halfway from the
        # cheapest cost to the target; likewise cheap choices while a saving is spent.
        b, tiny = min(max(self._target, lo_c), hi_c), 1e-3 * spread
        if cost > aim:
            inner = max(aim, (lo_c + b) / 2, lo_c + tiny)
            self._run = (self._run if self._run > 0 else 0.0) + max(0.0, math.log((cost - lo_c) / (inner - lo_c)))
        elif cost < aim:
            inner = min(aim, (hi_c + b) / 2, hi_c - tiny)
            self._run = (self._run if self._run < 0 else 0.0) - max(0.0, math.log((hi_c - cost) / (hi_c - inner)))
        else:
            self._run = 0.0
        pinned = abs(self._run) > -math.log(PINNED)
        self._boost = min(self._boost * BOOST_GROW, BOOST_MAX) if pinned else max(1.0, self._boost * BOOST_DECAY)
        # the error in units of its own typical size (so the step does not depend on the cost scale)
        self._dev2 = (1 - DEV_WEIGHT) * self._dev2 + DEV_WEIGHT * (cost - aim) ** 2
        err = (cost - aim) / math.sqrt(max(self._dev2, self._dev2_floor))
        boost = self._boost if err * self._run > 0 else 1.0  # only toward leaving the pinned side
        lo, hi = self._log_span()
        self._log_lam = float(np.clip(self._log_lam + GAIN * boost * err, lo, hi))

    def _update_trim(self, cost: float, aim: float) -> None:
        lo_c, hi_c = float(self._cost.min()), float(self._cost.max())
        if hi_c <= lo_c:
            return
        err = (cost - min(max(aim, lo_c), hi_c)) / (hi_c - lo_c)
        self._trim = float(np.clip(self._trim + TRIM_GAIN * err, -TRIM_SPAN, TRIM_SPAN))

    def _log_span(self) -> tuple[float, float]:
        ends = [self._log_ref] + ([math.log(self._start)] if self._start > 0 else [])
        return min(ends) - LOG_LAM_SPAN, max(ends) + LOG_LAM_SPAN

    def _restore(self, state: dict, where: str) -> None:
        _check_header(state, where)
        if state.get("router_fingerprint") != self._fingerprint:
            raise RouterError(f"{where} was made for router {state.get('router_fingerprint')!r}, "
                              f"not {self._fingerprint!r}; delete it or use another state file")
        try:
            target = finite(state.get("target"), "target", minimum=0.0)
            if abs(target - self._target) > 1e-9 * max(1.0, abs(self._target)):
                raise RouterError(f"{where} holds a target of {target:g} s/image, not {self._target:g}; "
                                  "delete it or use another state file")
            count = state.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise RouterError(f"count must be a whole number >= 0, got {count!r}")
            total = finite(state.get("total_cost"), "total cost", minimum=0.0)
            debt = finite(state.get("debt"), "debt")
            extra = finite(state.get("extra", 0.0), "extra", minimum=0.0)  # absent in states before escalation
            log_lam = finite(state.get("log_lam"), "log lam")
            boost = finite(state.get("boost"), "boost", minimum=0.0)
            run = finite(state.get("run"), "run")
            trim = finite(state.get("trim"), "trim")
            dev2 = finite(state.get("dev2"), "dev2", minimum=0.0)
            rows = state.get("rows")
            if not isinstance(rows, list):
                raise RouterError("rows must be a list")
            restored = []
            for r in rows[-self._window:]:
                if not isinstance(r, list) or len(r) != 2:
                    raise RouterError("each row must be [predicted qualities, allowed or null]")
                z = r[0]
                if not isinstance(z, list) or not all(v is None or (isinstance(v, numbers.Real)
                                                                    and not isinstance(v, bool)) for v in z):
                    raise RouterError("predicted qualities must be a list of numbers (null: excluded)")
                z = [-math.inf if v is None else v for v in z]
                if r[1] is not None and (not isinstance(r[1], list) or not all(v in (0, 1) for v in r[1])):
                    raise RouterError("allowed must be a list of 0/1 or null")
                restored.append(self.check_row(z, r[1]))
        except RouterError as exc:
            msg = str(exc)
            if msg.startswith(where):
                raise
            raise RouterError(f"{where} is not a valid budget-holder state: {msg}") from None
        self._count, self._total = count, total
        self._debt = float(np.clip(debt, *self._debt_range()))
        self._extra = min(extra, float(self._cost.sum()))
        self._log_lam = float(np.clip(log_lam, *self._log_span()))
        self._boost = float(np.clip(boost, 1.0, BOOST_MAX))
        self._run = run
        self._trim = float(np.clip(trim, -TRIM_SPAN, TRIM_SPAN))
        self._dev2 = dev2
        self._rows.clear()
        self._curves.clear()
        for z, ok in restored:
            self._rows.append((z, ok))
            self._curves.append(trade_off(z, self._cost, ok))
        self._cached = None


def _finite_lam(lam: float) -> float:
    if math.isnan(lam) or lam <= 0:
        return 0.0
    return min(lam, 1e300)


def _check_header(state: dict, where: str) -> None:
    if state.get("format") != STATE_FORMAT:
        raise RouterError(f"{where} is not a budget-holder state (format {state.get('format')!r})")
    if state.get("version") != STATE_VERSION:
        raise RouterError(f"{where} has state version {state.get('version')!r}; this version reads {STATE_VERSION}")
