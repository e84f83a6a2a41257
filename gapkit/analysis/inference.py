"""The statistics behind every verdict gapkit states: one paired contrast, its variance from the design,
its test, the Holm correction across a report, and the power a design had or needs.

Dimension names (declared once):

- ``R``: replicates matched across the cells a contrast compares: student seeds (a student of seed s has
  the same initialisation and data order whichever teacher it learns from), or, where a sweep fine-tuned
  each teacher several times, teacher fine-tunes (their students' seeds averaged within each).
- ``G``: groups of dev examples. Every run of a task is scored on the same dev examples; each run's score
  is split into ``G`` grouped-jackknife pseudo-values (for a mean over examples such as accuracy, exactly
  the group means), so the example-to-example variance of a contrast can be estimated. ``G = 1`` when
  only the runs' scores are known.

A contrast's data is ``x`` of shape ``(..., R, G)``: ``x[r, g] = sum_c w_c * y_c[r, g]`` over the cells
``c`` it compares (weights ``w_c``, e.g. +1 for the smallest teacher and -1 for the largest). Its estimate
is the grand mean. Replicates are crossed with example groups (the same examples score every run), so the
variance of the grand mean is that of a two-way random-effects design with one observation per cell:

    Var = s2_rep / R + s2_ex / G + s2_res / (R G)
    MS_rep = G var_r(row means),  MS_ex = R var_g(column means),  MS_res = residual mean square
    s2_rep = (MS_rep - MS_res) / G,  s2_ex = (MS_ex - MS_res) / R,  s2_res = MS_res

so the unbiased estimate is ``(MS_rep + MS_ex - MS_res) / (R G)``, with a component estimated below 0 set
to 0 (its mean square is then left out and MS_res takes its place). The test is Welch-Satterthwaite: ``t =
estimate / sqrt(Var)`` on ``df = Var^2 / sum_k (a_k MS_k)^2 / df_k``. With ``G = 1`` this is the paired
t-test over replicates (exact under normal replicate noise). Replicate (training) variance is never
replaced by example variance: the design needs ``R >= 2``.

The exact sign-flip permutation test over replicates (:func:`signflip_p`) is reported beside it; it needs no
normality but cannot go below ``2 / 2**R`` (0.25 with 3 seeds), which is why it is a check, not the
verdict. Power (:func:`power`) is the noncentral t of the same test; :func:`seeds_needed` the smallest
``R`` that reaches it for a given effect with the variance components held at their estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ContrastStats", "contrast_stats", "holm", "signflip_p", "power", "detectable_effect", "seeds_needed",
           "fieller", "POWER"]

POWER = 0.8  # the power a "smallest detectable effect" and "seeds needed" are computed for
MAX_REPLICATES = 10_000  # seeds_needed answers inf beyond this


@dataclass(frozen=True)
class ContrastStats:
    """A contrast's estimate and test (arrays of the leading shape of ``x``; scalars for one contrast).

    Attributes:
        estimate: the grand mean of ``x``.
        se: its standard error from the design; ``var = se ** 2``.
        df: Satterthwaite degrees of freedom.
        p: two-sided p-value of ``estimate == 0`` (NaN where the variance is 0 or R < 2).
        rep_var, ex_var, res_var: the variance components s2_rep, s2_ex, s2_res (module docstring).
        n_rep, n_groups: R and G.
    """

    estimate: np.ndarray
    se: np.ndarray
    df: np.ndarray
    p: np.ndarray
    rep_var: np.ndarray
    ex_var: np.ndarray
    res_var: np.ndarray
    n_rep: int
    n_groups: int

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """The two-sided t-interval ``estimate +- t(1 - (1 - level) / 2, df) * se``."""
        from scipy import stats

        half = stats.t.ppf(1 - (1 - level) / 2, self.df) * self.se
        return self.estimate - half, self.estimate + half

    def per_replicate(self) -> np.ndarray:
        """A = s2_rep + s2_res / G: the variance one more replicate divides (``Var = A / R + s2_ex / G``)."""
        return self.rep_var + self.res_var / self.n_groups


def _mean_squares(x: np.ndarray):
    """(MS_rep, MS_ex, MS_res) of a two-way layout ``x`` (..., R, G); MS_ex and MS_res are 0 when G == 1."""
    R, G = x.shape[-2:]
    rows = x.mean(-1)  # (..., R)
    ms_rep = G * rows.var(-1, ddof=1)
    if G == 1:
        zero = np.zeros_like(ms_rep)
        return ms_rep, zero, zero
    cols = x.mean(-2)  # (..., G)
    grand = rows.mean(-1)
    ms_ex = R * cols.var(-1, ddof=1)
    resid = x - rows[..., :, None] - cols[..., None, :] + grand[..., None, None]  # (..., R, G)
    ms_res = (resid ** 2).sum((-2, -1)) / ((R - 1) * (G - 1))
    return ms_rep, ms_ex, ms_res


def _combine(ms_rep, ms_ex, ms_res, R: int, G: int):
    """(Var, df, s2_rep, s2_ex, s2_res) from the mean squares (module docstring)."""
    if G == 1:
        var = ms_rep / R
        df = np.full_like(var, R - 1.0)
        return var, df, ms_rep, np.zeros_like(var), np.zeros_like(var)
    # The replicate mean square is never dropped: it estimates s2_rep + s2_res / G, the variance of a
    # replicate's contrast, from only R - 1 degrees of freedom, and setting it aside whenever it happens to
    # fall below MS_res (a 2-df estimate often does) makes the test liberal. Only the example component,
    # (MS_ex - MS_res) / R, is set to 0 when its estimate is negative.
    ex_on = (ms_ex >= ms_res).astype(float)
    n = R * G
    a_rep = np.full_like(ms_rep, 1.0 / n)
    a_ex = ex_on / n
    a_res = -ex_on / n
    var = a_rep * ms_rep + a_ex * ms_ex + a_res * ms_res
    denom = ((a_rep * ms_rep) ** 2 / (R - 1) + (a_ex * ms_ex) ** 2 / (G - 1)
             + (a_res * ms_res) ** 2 / ((R - 1) * (G - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denom > 0, var ** 2 / np.where(denom > 0, denom, 1.0), R - 1.0)
        # Satterthwaite's df grows exactly when the few-df replicate mean square is low by chance, which
        # makes the test liberal (7% at 5% with 3 seeds and comparable components, in the calibration
        # tests). Capping it at (R - 1) * Var / Var_rep (the replicate df, scaled by the share of the
        # variance the replicates carry) keeps it at or below the nominal level; with 2 replicates the
        # replicate df alone (1) is used. Below, the df never fall under the replicates' R - 1: the
        # negative residual term can pull Satterthwaite's formula under it when the example component
        # is near 0, where Var is essentially MS_rep / (R G) on R - 1 df.
        rep_share = np.where(var > 0, var / np.where(var > 0, a_rep * ms_rep, 1.0), 1.0)
        df = np.clip(df, R - 1.0, (R - 1) * rep_share) if R > 2 else np.full_like(df, R - 1.0)
    s2_rep = np.maximum(ms_rep - ms_res, 0.0) / G
    s2_ex = np.maximum(ms_ex - ms_res, 0.0) / R
    return var, df, s2_rep, s2_ex, ms_res


def contrast_stats(x) -> ContrastStats:
    """Estimate, standard error, Satterthwaite df and two-sided p of contrasts (module docstring).

    Args:
        x: ``(..., R, G)``: replicates by example groups (``G = 1``, ``x[..., None]``, for run scores
            only); R >= 2 gives a test.
    Returns:
        A :class:`ContrastStats` of the leading shape ``...``.
    """
    from scipy import stats

    x = np.asarray(x, dtype=float)
    if x.ndim < 2:
        raise ValueError(f"contrast_stats needs x of shape (..., R, G), got shape {x.shape}.")
    R, G = x.shape[-2:]
    estimate = x.mean((-2, -1))
    if R < 2:
        nan = np.full_like(estimate, np.nan)
        return ContrastStats(estimate, nan, nan, nan, nan, nan, nan, R, G)
    var, df, s2_rep, s2_ex, s2_res = _combine(*_mean_squares(x), R, G)
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(estimate) / se
        p = np.where(se > 0, 2 * stats.t.sf(t, df), np.nan)
    return ContrastStats(estimate, se, df, p, s2_rep, s2_ex, s2_res, R, G)


def holm(p, axis: int = -1) -> np.ndarray:
    """Holm's step-down adjusted p-values along ``axis`` (NaN entries are not tested and stay NaN).

    With m tests, the k-th smallest p is multiplied by (m - k + 1), the running maximum is taken, and
    values are clipped at 1: a test is rejected at level alpha iff its adjusted p is <= alpha. Holm
    controls the family-wise error rate at alpha under any dependence between the tests.
    """
    p = np.moveaxis(np.asarray(p, dtype=float), axis, -1)
    tested = ~np.isnan(p)
    m = tested.sum(-1, keepdims=True)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, -1)
    rank = np.arange(p.shape[-1])
    scaled = np.where(rank < m, sorted_p * (m - rank), np.nan)
    adjusted = np.minimum(np.fmax.accumulate(np.nan_to_num(scaled, nan=-np.inf), axis=-1), 1.0)
    adjusted = np.where(rank < m, adjusted, np.nan)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, -1)
    return np.moveaxis(out, -1, axis)


def signflip_p(d, max_exact: int = 14, n_draws: int = 20_000, seed: int = 0) -> np.ndarray:
    """Two-sided sign-flip permutation p-value of ``mean(d) == 0`` over the last axis (replicates).

    Under the null a replicate's difference is as likely to have either sign (symmetric noise), so every
    sign pattern is equally likely; p is the share of patterns whose |sum| reaches the observed one. Exact
    (all 2**R patterns) up to ``max_exact`` replicates, else ``n_draws`` random patterns. The smallest
    possible p is 2 / 2**R.
    """
    d = np.asarray(d, dtype=float)
    R = d.shape[-1]
    if R <= max_exact:
        patterns = 1 - 2 * ((np.arange(2 ** R)[:, None] >> np.arange(R)) & 1)  # (2^R, R)
    else:
        patterns = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_draws, R))
        patterns[0] = 1.0
    observed = np.abs(d.sum(-1))[..., None]  # (..., 1)
    flipped = np.abs(d @ patterns.T)  # (..., patterns)
    tol = 1e-9 * np.maximum(np.abs(d).sum(-1, keepdims=True), 1e-12)
    return (flipped >= observed - tol).mean(-1)


def _planned_df(rep_var, ex_var, res_var, R: int, G: int) -> float:
    """Satterthwaite df of a design with R replicates when the components are as given (expected MS)."""
    if G == 1:
        return R - 1.0
    ms = (G * rep_var + res_var, R * ex_var + res_var, res_var)
    _, df, *_ = _combine(*(np.asarray(v, dtype=float) for v in ms), R, G)
    return float(df)


def power(effect: float, per_rep: float, fixed: float, R: int, df: float, alpha: float) -> float:
    """Power of the two-sided t-test at ``alpha`` for a true contrast ``effect`` when
    ``Var = per_rep / R + fixed`` on ``df`` degrees of freedom (noncentral t)."""
    from scipy import stats

    se = np.sqrt(per_rep / R + fixed)
    if not se > 0:
        return float("nan")
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) / se
    if nc > crit + 40:  # certain detection (and beyond where scipy's noncentral t stays finite)
        return 1.0
    lower = stats.nct.cdf(-crit, df, nc)  # the wrong-sign tail: negligible, and NaN in scipy for a large nc
    return float(stats.nct.sf(crit, df, nc) + (0.0 if np.isnan(lower) else lower))


def detectable_effect(stats_: ContrastStats, alpha: float, target: float = POWER) -> float:
    """The smallest true contrast the design of ``stats_`` (its R, G and estimated variances) detects with
    probability ``target`` at two-sided level ``alpha``; NaN without a variance."""
    from scipy.optimize import brentq

    se, df = float(stats_.se), float(stats_.df)
    if not (se > 0 and df > 0):
        return float("nan")
    per_rep = float(stats_.per_replicate())
    fixed = float(stats_.ex_var) / stats_.n_groups
    R = stats_.n_rep
    per_rep, fixed = _scaled(per_rep, fixed, se ** 2, R)
    from scipy import stats

    upper = se * (stats.t.ppf(1 - alpha / 2, df) + 40)
    return float(brentq(lambda e: power(e, per_rep, fixed, R, df, alpha) - target, 0.0, upper))


def _scaled(per_rep: float, fixed: float, var: float, R: int) -> tuple[float, float]:
    """The components scaled so that ``per_rep / R + fixed`` is the estimated Var (a clamped component
    can make the two differ by the residual term)."""
    total = per_rep / R + fixed
    k = var / total if total > 0 else 1.0
    return per_rep * k, fixed * k


def seeds_needed(stats_: ContrastStats, effect: float, alpha: float, target: float = POWER) -> float:
    """The fewest replicates (R >= 2) that detect a true contrast ``effect`` with probability ``target`` at
    two-sided ``alpha``, the variance components held at their estimates (example groups as they are);
    ``inf`` when not even ``MAX_REPLICATES`` do (e.g. the dev examples' own noise is larger than the
    effect); NaN without a variance estimate."""
    se = float(stats_.se)
    if not se > 0 or not effect > 0:
        return float("nan")
    G = stats_.n_groups
    rep_var, ex_var, res_var = float(stats_.rep_var), float(stats_.ex_var), float(stats_.res_var)
    per_rep, fixed = _scaled(float(stats_.per_replicate()), ex_var / G, se ** 2, stats_.n_rep)

    def enough(R: int) -> bool:
        return power(effect, per_rep, fixed, R, _planned_df(rep_var, ex_var, res_var, R, G), alpha) >= target

    if not enough(MAX_REPLICATES):
        return float("inf")
    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:  # power grows with R: the first R that is enough
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(max(high, 2))


def fieller(a: float, b: float, var_a: float, var_b: float, cov: float, df: float, level: float):
    """Fieller's interval for the ratio ``a / b`` of two jointly normal estimates, or None when it is not a
    bounded interval (``b`` is not significantly different from 0 at ``level``: the ratio can then be any
    number, and no interval is meaningful)."""
    from scipy import stats

    t2 = stats.t.ppf(1 - (1 - level) / 2, df) ** 2
    qa = b * b - t2 * var_b
    if not qa > 0:
        return None
    qb = a * b - t2 * cov
    qc = a * a - t2 * var_a
    disc = qb * qb - qa * qc
    if disc < 0:  # cannot happen when qa > 0 for a valid covariance; kept for rounding
        return None
    root = np.sqrt(disc)
    return (qb - root) / qa, (qb + root) / qa
