"""Least squares for training-free recovery, one output projection at a time (recovery.py fits its levels with it).

A projection ``y = W x + b`` has input units (an FFN neuron = one column of W, an attention head = `d` columns), some
of them removed; on the calibration tokens it should give a target T (recovery.py: what the dense model feeds the
LayerNorm after it, minus the pruned model's own residual). With ``A = [x_kept | 1]`` (one row per real token),
`ProjectionFit` accumulates what every level needs, as float64 sums of per-batch float32 products: the normal
equations ``A'A`` and ``A'T`` with ``||T||^2`` (for relative errors), and the sums of the removed units' inputs.
It solves one level on them (recovery.py cites each level's source):

* bias:  ``b' = b + W[:, removed] @ mean(x_removed)``;
* scale: ``min_s ||sum_u s_u W_u x_u + b - T||^2 + lam ||s - 1||^2`` over the kept units u, more damping while a
  scale leaves its bounds, plain 0/1 gates (s = 1) when none helps;
* lstsq: ``min_X ||A X - T||^2 + lam ||X - X0||^2`` with ``X0 = [W[:, kept] | b]'`` (`ridge_solve`).

Nothing here knows a model's layout: a fit takes a projection's weight and bias, the kept units and their width, so
any linear layer whose input units are removed can be re-fitted with it.
"""
from __future__ import annotations


import numpy as np
import torch

from .slicing import unit_rows


def unit_columns(kept, d: int) -> list[int]:
    """Input columns of the kept units (a head = d columns, an FFN neuron = 1): `slicing.unit_rows` as a list."""
    return unit_rows(list(kept), d).tolist()


class ProjectionFit:
    """What every level needs about one projection on the calibration tokens (float64 sums of per-batch float32
    products): the normal equations of [x_kept | 1] against the target, and the removed units' activation sums.

    `weight` (out, in) and `bias` are the projection's; its input units are `d` columns wide, `kept` lists the kept
    ones. `need_ls=False` accumulates only what bias compensation needs (no target, no normal equations)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kept: list[int], d: int, need_ls: bool):
        self.W = weight.detach().double()  # (out, in)
        self.has_bias = bias is not None  # Llama-layout projections have none: no bias column, none fitted
        self.b = bias.detach().double() if bias is not None else torch.zeros(self.W.shape[0], dtype=torch.float64)
        self.kept, self.d = list(kept), d
        n_units = self.W.shape[1] // d
        keep = set(self.kept)
        self.removed = [u for u in range(n_units) if u not in keep]
        self.kcols = torch.as_tensor(unit_columns(self.kept, d), dtype=torch.long)
        self.pcols = torch.as_tensor(unit_columns(self.removed, d), dtype=torch.long)
        k = len(self.kcols) + self.has_bias
        self.need_ls = need_ls
        self.sum_removed = torch.zeros(len(self.pcols), dtype=torch.float64)
        self.n = 0
        if need_ls:
            self.C = torch.zeros(k, k, dtype=torch.float64)
            self.D = torch.zeros(k, self.W.shape[0], dtype=torch.float64)
            self.bb = 0.0

    def add(self, x: torch.Tensor, target: torch.Tensor | None, weight: int = 1) -> None:
        """x: (N, in) ungated projection inputs on real tokens; target: (N, out) wanted projection outputs; `weight`:
        how many times these rows count (a decoder's shared prompt prefix, run once for every prompt)."""
        x = x.detach().float().cpu()
        self.n += weight * x.shape[0]
        if len(self.pcols):
            self.sum_removed += weight * x.index_select(1, self.pcols).double().sum(0)
        if self.need_ls:  # products of one batch in float32, sums over batches in float64
            a = torch.cat([x.index_select(1, self.kcols)] + [torch.ones(x.shape[0], 1)] * self.has_bias, 1)
            t = target.detach().float().cpu()
            self.C += weight * (a.T @ a).double()
            self.D += weight * (a.T @ t).double()
            self.bb += weight * float((t.double() ** 2).sum())

    # relative squared error of [Wk | b] = X^T on the accumulated system: (X'CX - 2X'D + ||T||^2) / ||T||^2
    def rel_error(self, X: torch.Tensor) -> float:
        err = float((X * (self.C @ X)).sum() - 2 * (X * self.D).sum()) + self.bb
        return max(err, 0.0) / self.bb if self.bb > 0 else 0.0

    def x0(self) -> torch.Tensor:
        """The original solution ``[W[:, kept] | b]'`` (kept columns + 1, out)."""
        return torch.cat([self.W.index_select(1, self.kcols).T] + [self.b.view(1, -1)] * self.has_bias, 0)

    def solve_bias(self) -> np.ndarray:
        """The bias correction ``W[:, removed] @ mean(x_removed)`` (out,): what the removed units gave on average."""
        mean = self.sum_removed / max(self.n, 1)
        return (self.W.index_select(1, self.pcols) @ mean).float().numpy()

    def solve_lstsq(self, ridge: float) -> tuple[np.ndarray, np.ndarray, dict]:
        """(weight change of the kept columns (out, kept columns), bias change (out,), info) of the ridge re-fit
        pulled toward the original weights with lambda = ridge * mean diagonal of A'A; no change when the solve
        is not finite (info["fallback"])."""
        k = len(self.kcols)
        lam = ridge * float(self.C.diagonal().mean())
        X0 = self.x0()
        X = ridge_solve(self.C, self.D, X0, lam)
        info = {"lambda": lam, "err_before": self.rel_error(X0)}
        if not torch.isfinite(X).all():
            info.update(fallback=True, err_after=info["err_before"])
            no_db = np.zeros(self.W.shape[0], np.float32) if self.has_bias else None
            return np.zeros((self.W.shape[0], k), np.float32), no_db, info
        info["err_after"] = self.rel_error(X)
        dW = (X[:k].T - X0[:k].T).float().numpy()
        db = (X[k] - X0[k]).float().numpy() if self.has_bias else None
        return dW, db, info

    def unit_system(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gram matrix G and right side r of min_s ||sum_u s_u W_u x_u + b - T||^2 (units of d columns)."""
        k = len(self.kcols)
        Wk = self.W.index_select(1, self.kcols)  # (out, k)
        M = self.C[:k, :k] * (Wk.T @ Wk)
        r_col = (self.D[:k] * Wk.T).sum(1)
        if self.has_bias:
            r_col = r_col - self.C[:k, k] * (Wk.T @ self.b)
        u = k // self.d
        G = M.view(u, self.d, u, self.d).sum((1, 3))
        r = r_col.view(u, self.d).sum(1)
        return G, r

    def solve_scale(self, damping: float, bounds: tuple[float, float]) -> tuple[np.ndarray, dict]:
        """(one scale per kept unit, info): damped least squares pulled toward 1 with lambda = damping (1e-6 if 0)
        * mean diagonal of G, the damping grown tenfold (up to 10^4 times) while a scale leaves `bounds`; all ones when
        that does not help (info["fallback"])."""
        G, r = self.unit_system()
        u = G.shape[0]
        base = float(G.diagonal().mean())
        ones = torch.ones(u, dtype=torch.float64)
        X0 = self.x0()
        info = {"err_before": self.rel_error(X0)}
        for mult in (1.0, 10.0, 100.0, 1e3, 1e4):  # more damping pulls the scales toward 1
            lam = (damping or 1e-6) * mult * base
            s = ridge_solve(G, r.view(-1, 1), ones.view(-1, 1), lam).view(-1)
            if torch.isfinite(s).all() and float(s.min()) >= bounds[0] and float(s.max()) <= bounds[1]:
                info.update({"lambda": lam, "damping_mult": mult, "err_after": self.scaled_error(s), "fallback": False,
                             "scale_min": float(s.min()), "scale_max": float(s.max())})
                return s.float().numpy(), info
        info.update({"lambda": None, "err_after": info["err_before"], "fallback": True})
        return np.ones(u, np.float32), info

    def scaled_error(self, s: torch.Tensor) -> float:
        """`rel_error` of the original weights with kept unit u's columns scaled by s[u] (the bias, if any, as is)."""
        Xs = self.x0()
        Xs[: len(self.kcols)] *= s.repeat_interleave(self.d).view(-1, 1)
        return self.rel_error(Xs)

    def solve_lsmr(self) -> tuple[np.ndarray, dict]:
        """(one scale per kept unit, info) by Kwon et al.'s solver (their utils/linalg.py `lsmr_cupy_solver`): LSMR
        with damp = 1 on the normal equations, G d = r - G 1, s = 1 + d (absolute damping on G, not the relative
        pull toward 1 of `solve_scale`); an LSMR stop code >= 3 or a scale outside [-10, 10] rejects the solve: plain
        0/1 gates for this projection (info["fallback"]; their code stops tuning this and every later layer)."""
        from scipy.sparse.linalg import lsmr

        G, r = self.unit_system()
        X0 = self.x0()
        info = {"err_before": self.rel_error(X0), "solver": "lsmr"}
        rhs = (r - G.sum(1)).numpy()
        if G.shape[0] == 1:
            delta, ok = rhs / float(G[0, 0]), True
        else:
            sol = lsmr(G.numpy(), rhs, damp=1.0)
            delta, ok = sol[0], sol[1] < 3
        s = torch.as_tensor(1.0 + delta, dtype=torch.float64)
        if not ok or not torch.isfinite(s).all() or float(s.abs().max()) > 10:
            info.update({"err_after": info["err_before"], "fallback": True})
            return np.ones(G.shape[0], np.float32), info
        info.update({"err_after": self.scaled_error(s), "fallback": False, "scale_min": float(s.min()),
                     "scale_max": float(s.max())})
        return s.float().numpy(), info


def ridge_solve(AtA: torch.Tensor, AtB: torch.Tensor, X0: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_X ||A X - B||^2 + lam ||X - X0||^2 from the normal equations: (A'A + lam I) X = A'B + lam X0.
    Equal to `torch.linalg.lstsq([A; sqrt(lam) I], [B; sqrt(lam) X0])`."""
    n = AtA.shape[0]
    lhs = AtA + lam * torch.eye(n, dtype=AtA.dtype)
    rhs = AtB + lam * X0
    try:
        L, info = torch.linalg.cholesky_ex(lhs)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, L)
    except RuntimeError:
        pass
    return torch.linalg.lstsq(lhs, rhs).solution

