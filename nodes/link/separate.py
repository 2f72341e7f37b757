"""Pixel-level separation of cliques as they close (linker split "pixels").

The linker keeps the labelled pixels of the 2D peaks of open cliques
(`PixelPool`: one chunk per point or block added, dropped when all its peaks
have closed, so memory follows the open cliques, as the forest does). When a
clique closes, `Separator` divides its pixels between the spots it holds
(`kernels.separate`: LoG seeds in 3D, a Gaussian mixture fitted from them,
each pixel's intensity shared in proportion to the models) and replaces the
clique by one clique per spot, its sums made from its shares of the pixels.
Sparse pixels keep their 2D label; the members table says, per (2D peak,
clique), the share of the peak's intensity, so every pixel's intensity is
counted exactly once.

The third axis of the box is the point id: the separation assumes a clique's
points follow its rocking curve in point order (sweeps, snakes row by row).
A clique whose box is too large (interlaced passes, long streaks) is left
whole.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from nodes.kernels.separate import NACC, separate_cliques
from stream.core.threads import set_os_name, usable_cores

MAX_VOXELS = 4_000_000


class PixelPool:
    """Labelled pixels of the 2D peaks that may still belong to an open clique."""

    def __init__(self, nfactors: int):
        self.nfactors = nfactors  # motor factors per peak (CliqueColumns.factors)
        self.chunks: list[dict[str, np.ndarray]] = []

    def append(self, gid0: int, point: np.ndarray, factors: np.ndarray, nnz: np.ndarray,
               npeaks: np.ndarray, row: np.ndarray, col: np.ndarray, label: np.ndarray,
               intensity: np.ndarray) -> None:
        """Add the peaks gid0.. of consecutive points (pixels per point `nnz`, labels
        1..npeaks per point), with per peak its point id and factors row."""
        npk = int(npeaks.sum())
        if not npk:
            return
        point_of_pixel = np.repeat(np.arange(nnz.shape[0]), nnz)
        peak_base = np.r_[0, np.cumsum(npeaks)[:-1]]
        label = np.asarray(label, np.int64)
        inside = label > 0
        peak = peak_base[point_of_pixel[inside]] + label[inside] - 1
        order = np.argsort(peak, kind="stable")
        ptr = np.zeros(npk + 1, np.int64)
        np.cumsum(np.bincount(peak, minlength=npk), out=ptr[1:])
        idx = np.flatnonzero(inside)[order]
        self.chunks.append({
            "gid0": np.int64(gid0), "ptr": ptr, "point": np.asarray(point, np.int64),
            "factors": np.asarray(factors, np.float64).reshape(npk, self.nfactors),
            "row": np.asarray(row)[idx].astype(np.int32),
            "col": np.asarray(col)[idx].astype(np.int32),
            "intensity": np.asarray(intensity)[idx].astype(np.float32),
            "open": np.ones(npk, np.bool_)})

    def append_frame(self, gid0: int, point_id: int, sparse: Any,
                     factors: np.ndarray) -> None:
        """`append` of one point's labelled SparseFrame (factors: its one row)."""
        n = int(sparse.npeaks)
        self.append(gid0, np.full(n, point_id), np.repeat(factors, n, axis=0),
                    np.array([sparse.nnz]), np.array([n]), sparse.row, sparse.col,
                    sparse.label, sparse.intensity)

    def _locate(self, gids: np.ndarray) -> np.ndarray:
        starts = np.array([ch["gid0"] for ch in self.chunks], np.int64)
        return np.searchsorted(starts, gids, "right") - 1

    def gather(self, gids: np.ndarray) -> dict[str, np.ndarray]:
        """The pixels of peaks `gids` (each with its row in gids, `member`, grouped in
        gids' order), and per peak its point and factors."""
        where = self._locate(gids)
        n = gids.shape[0]
        point = np.empty(n, np.int64)
        factors = np.empty((n, self.nfactors), np.float64)
        parts = []
        for ch_i in np.unique(where).tolist():
            ch = self.chunks[ch_i]
            sel = np.flatnonzero(where == ch_i)
            local = gids[sel] - ch["gid0"]
            point[sel] = ch["point"][local]
            factors[sel] = ch["factors"][local]
            start, count = ch["ptr"][local], ch["ptr"][local + 1] - ch["ptr"][local]
            idx = _ranges(start, count)
            parts.append((np.repeat(sel, count), np.repeat(ch["point"][local], count),
                          ch["row"][idx], ch["col"][idx], ch["intensity"][idx]))
        member = np.concatenate([p[0] for p in parts])
        order = np.argsort(member, kind="stable")
        out = {k: np.concatenate([p[i] for p in parts])[order]
               for i, k in enumerate(("member", "z", "row", "col", "intensity"))}
        out.update(point=point, factors=factors)
        return out

    def close(self, gids: np.ndarray) -> None:
        """Forget the peaks `gids` (their cliques closed); drop chunks left empty."""
        if not gids.shape[0] or not self.chunks:
            return
        where = self._locate(gids)
        for ch_i in np.unique(where).tolist():
            ch = self.chunks[ch_i]
            ch["open"][gids[where == ch_i] - ch["gid0"]] = False
        self.chunks = [ch for ch in self.chunks if ch["open"].any()]

    def npixels(self) -> int:
        return sum(int(ch["row"].shape[0]) for ch in self.chunks)

    # ------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, Any]:
        """The chunks as plain arrays (concatenated, with pointers)."""
        ch = self.chunks
        cat = {k: (np.concatenate([c[k] for c in ch]) if ch else np.empty(0, dt))
               for k, dt in (("point", np.int64), ("row", np.int32), ("col", np.int32),
                             ("intensity", np.float32))}
        cat["open"] = (np.concatenate([c["open"] for c in ch]) if ch
                       else np.empty(0, np.bool_)).astype(np.uint8)
        cat["factors"] = (np.concatenate([c["factors"] for c in ch]) if ch
                          else np.empty((0, self.nfactors)))
        cat["ptr"] = np.concatenate([c["ptr"][1:] for c in ch]) if ch else np.empty(0,
                                                                                    np.int64)
        cat["gid0"] = np.array([c["gid0"] for c in ch], np.int64)
        cat["npeaks"] = np.array([c["point"].shape[0] for c in ch], np.int64)
        cat["nfactors"] = self.nfactors
        return cat

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PixelPool:
        pool = cls(int(state["nfactors"]))
        npeaks = np.asarray(state["npeaks"], np.int64)
        ptr_all = np.asarray(state["ptr"], np.int64)
        factors = np.asarray(state["factors"], np.float64).reshape(-1, pool.nfactors)
        k0 = px0 = 0
        for gid0, npk in zip(np.asarray(state["gid0"], np.int64).tolist(), npeaks.tolist(),
                             strict=True):
            ptr = np.r_[0, ptr_all[k0:k0 + npk]].astype(np.int64)
            pk = slice(k0, k0 + npk)
            px = slice(px0, px0 + int(ptr[-1]))
            pool.chunks.append({
                "gid0": np.int64(gid0), "ptr": ptr,
                "point": np.asarray(state["point"], np.int64)[pk].copy(),
                "factors": factors[pk].copy(),
                "row": np.asarray(state["row"], np.int32)[px].copy(),
                "col": np.asarray(state["col"], np.int32)[px].copy(),
                "intensity": np.asarray(state["intensity"], np.float32)[px].copy(),
                "open": np.asarray(state["open"])[pk].astype(np.bool_)})
            k0 += npk
            px0 += int(ptr[-1])
        if k0 != ptr_all.shape[0]:
            raise ValueError("linker state: pixel pool pointers do not fit its peaks")
        return pool


class Separator:
    """Replaces closed cliques by one clique per spot (see the module docstring)."""

    def __init__(self, *, min_pixels: int = 12, smooth: tuple[float, float, float] =
                 (0.7, 1.0, 1.0), seed_fraction: float = 0.05, merge_distance: float = 1.0,
                 min_share: float = 0.02, add_sigma: float = 30.0, bic_factor: float = 1.0,
                 relative_noise: float = 0.05, background: float = 0.0):
        self.min_pixels = min_pixels
        self.background = background  # level under the spots, for fit_intensity
        self.smooth = smooth
        self.seed_fraction = seed_fraction
        self.merge_distance = merge_distance
        self.min_share = min_share
        self.add_sigma = add_sigma
        self.bic_factor = bic_factor
        self.relative_noise = relative_noise
        self.nseparated = 0  # cliques that held more than one spot
        self.nexamined = 0
        self.nfit_failed = 0  # cliques fitted (`fit_failures`) whose fit failed: NaN
        self._count = threading.Lock()  # compute() may run in several threads at once

    def apply(self, closed: tuple, pool: PixelPool, columns: tuple) -> tuple:
        """`Forest.close` output with its multi-spot cliques separated, plus `share`
        per member row and each clique's fitted intensity (NaN if none): (n2d, table,
        npx, first, last, member_gid, member_clique, sums, share, fit)."""
        return self.compute(self.prepare(closed, pool), columns)

    def prepare(self, closed: tuple, pool: PixelPool) -> tuple:
        """The quick part of `apply`, which must run where the pool is kept: the closed
        cliques' pixels taken out of the pool. `compute` may then run in another
        thread (it touches neither the pool nor the linker)."""
        n2d, npx, gids, mclq = closed[0], closed[2], closed[5], closed[6]
        cand = np.flatnonzero(npx >= self.min_pixels) if n2d.shape[0] else npx[:0]
        if not cand.shape[0]:
            pool.close(gids)
            return closed, cand, None, None
        is_cand = np.zeros(n2d.shape[0], np.bool_)
        is_cand[cand] = True
        sel = np.flatnonzero(is_cand[mclq])
        sel = sel[np.argsort(mclq[sel], kind="stable")]  # members grouped by clique
        px = pool.gather(gids[sel])
        pool.close(gids)
        return closed, cand, sel, px

    def compute(self, job: tuple, columns: tuple) -> tuple:
        """The separation of `prepare`'s cliques (the numba kernels, without the GIL)."""
        closed, cand, sel, px = job
        n2d, table, npx, first, last, gids, mclq, sums = closed
        share = np.ones(gids.shape[0], np.float64)
        nc = n2d.shape[0]
        fitted = np.full(nc, np.nan)
        if px is None:
            return (*closed, share, fitted)
        with self._count:
            self.nexamined += cand.shape[0]
        per_clique = np.bincount(mclq[sel][px["member"]], minlength=nc)[cand]
        pix_ptr = np.r_[0, np.cumsum(per_clique)].astype(np.int64)
        ncomp, zc, acc, fit = separate_cliques(
            pix_ptr, px["z"], px["row"], px["col"], px["intensity"], px["member"],
            sel.shape[0], *self.smooth, self.seed_fraction, self.merge_distance,
            self.min_share, MAX_VOXELS, self.add_sigma, self.bic_factor, self.relative_noise,
            float(self.background))
        split = ncomp > 1
        fitted[cand] = fit[:, 0]
        if split.any():
            out = self._rebuild(closed, share, fitted, cand, sel, px, ncomp, zc, acc, fit,
                                columns)
        else:
            out = (*closed, share, fitted)
        k_of = np.ones(nc, np.int64)  # each clique's rows in `out`: its components
        k_of[cand] = ncomp
        tried = np.repeat(np.isin(np.arange(nc), cand), k_of)
        failed = fit_failures(tried, out[9], out[3], out[4])
        with self._count:
            self.nseparated += int(split.sum())
            self.nfit_failed += failed
        return out

    def _rebuild(self, closed, share, fitted, cand, sel, px, ncomp, zc, acc, fit, columns):
        """New tables: each separated clique replaced, in place, by its components."""
        n2d, table, npx, first, last, gids, mclq, sums = closed
        nc = n2d.shape[0]
        k_of = np.ones(nc, np.int64)
        k_of[cand] = ncomp
        new_first = np.r_[0, np.cumsum(k_of)[:-1]]
        ntot = int(k_of.sum())
        keep_rows = np.flatnonzero(k_of == 1)  # old cliques kept whole
        out_sums = np.empty((ntot, sums.shape[1]), np.float64)
        out_sums[new_first[keep_rows]] = sums[keep_rows]
        out_table = np.empty((table.shape[0], ntot), np.float64)
        out_table[:, new_first[keep_rows]] = table[:, keep_rows]
        out = {"n2d": np.empty(ntot, n2d.dtype), "npx": np.empty(ntot, npx.dtype),
               "first": np.empty(ntot, first.dtype), "last": np.empty(ntot, last.dtype),
               "fit": np.empty(ntot, np.float64)}
        for name, a in (("n2d", n2d), ("npx", npx), ("first", first), ("last", last),
                        ("fit", fitted)):
            out[name][new_first[keep_rows]] = a[keep_rows]
        # member rows of kept cliques
        keep_m = k_of[mclq] == 1
        rows_g = [gids[keep_m]]
        rows_c = [new_first[mclq[keep_m]]]
        rows_s = [share[keep_m]]
        # separated cliques: (member, component) rows with a share
        split_i = np.flatnonzero(ncomp > 1)
        nacc = sums.shape[1]
        for i in split_i.tolist():  # one pass per separated clique (not per peak)
            c_old = cand[i]
            members = np.flatnonzero(mclq[sel] == c_old)
            K = int(ncomp[i])
            order = np.argsort(zc[i, :K], kind="stable")
            a = acc[members][:, order, :]  # (m, K, NACC)
            tot = a[:, :, 1].sum(axis=1)
            frac = np.divide(a[:, :, 1], tot[:, None], out=np.zeros_like(a[:, :, 1]),
                             where=tot[:, None] != 0)
            s_i = a[:, :, 3]
            s = np.zeros((K, nacc))
            s[:, :NACC] = a.sum(axis=0)
            s[:, NACC] = (s_i * px["point"][members, None]).sum(axis=0)
            s[:, NACC + 1:] = np.einsum("mk,mf->kf", s_i, px["factors"][members])
            rows = new_first[c_old] + np.arange(K)
            out_sums[rows] = s
            out["fit"][rows] = fit[i, order]
            has = frac > 0
            pts = px["point"][members]
            out["n2d"][rows] = has.sum(axis=0)
            out["first"][rows] = [pts[has[:, k]].min() for k in range(K)]
            out["last"][rows] = [pts[has[:, k]].max() for k in range(K)]
            mi, ki = np.nonzero(has)
            rows_g.append(gids[sel[members[mi]]])
            rows_c.append(rows[ki])
            rows_s.append(frac[mi, ki])
        s_i_col, copy_cols, ratio_cols = columns
        done = np.flatnonzero(np.repeat(k_of > 1, k_of))
        with np.errstate(divide="ignore", invalid="ignore"):
            out_table[:copy_cols.shape[0], done] = out_sums[done][:, copy_cols].T
            out_table[copy_cols.shape[0]:, done] = (out_sums[done][:, ratio_cols]
                                                    / out_sums[done][:, s_i_col, None]).T
        out["npx"][done] = np.rint(out_sums[done, 0]).astype(npx.dtype)
        g = np.concatenate(rows_g)
        c = np.concatenate(rows_c)
        sh = np.concatenate(rows_s)
        order = np.lexsort((c, g))
        return (out["n2d"], out_table, out["npx"], out["first"], out["last"], g[order],
                c[order], out_sums, sh[order], out["fit"])


class Background:
    """Separations run by threads of their own (numba releases the GIL), given back
    in the order they were asked for; at most MAX_PENDING behind. One thread per two
    cores (the other core for the chain's workers), at most four."""

    MAX_PENDING = 64  # closings it may be behind before a step waits for the oldest

    def __init__(self, threads: int | None = None):
        self.threads = threads or max(1, min(4, usable_cores() // 2))
        self.executor: ThreadPoolExecutor | None = None  # threads while a scan runs
        self.pending: deque[Future] = deque()

    def submit(self, separator: Separator, closed: tuple, pool: PixelPool,
               columns: tuple) -> None:
        job = separator.prepare(closed, pool)  # here: the pool is the caller's
        if self.executor is None:
            self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="separate",
                                               initializer=set_os_name,
                                               initargs=("separate",))  # for top -H
        self.pending.append(self.executor.submit(separator.compute, job, columns))

    def done(self, wait_all: bool) -> list[tuple]:
        """The finished separations, oldest first (all of them with `wait_all`)."""
        out = []
        while self.pending and (wait_all or self.pending[0].done()
                                or len(self.pending) > self.MAX_PENDING):
            out.append(self.pending.popleft().result())
        return out

    def cancel(self) -> None:
        """Forget what is under way (a scan given up) and let the thread go."""
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None


def fit_failures(tried: np.ndarray, fit: np.ndarray, first: np.ndarray,
                 last: np.ndarray) -> int:
    """Cliques whose fit failed: fitted (`tried`: at least `min_pixels`), seen on more
    than one point (on one point only there is no rocking curve to fit: NaN by
    design), and NaN (pixels that do not make a Gaussian: two points only, a flat or
    hollow top, a singular fit)."""
    return int(np.count_nonzero(tried & np.isnan(fit) & (first != last)))


def _ranges(start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Concatenated aranges start[k] .. start[k] + count[k]."""
    total = int(count.sum())
    if not total:
        return np.empty(0, np.int64)
    ends = np.cumsum(count)
    base = np.repeat(start - (ends - count), count)
    return base + np.arange(total)
