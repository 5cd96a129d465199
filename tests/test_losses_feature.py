"""Parity of the feature-distillation functions with reference formulas written out independently.

The references use explicit loops and elementary operations (no shared helpers with kdlab),
in float64, on random inputs of several shapes.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.losses import (
    ab_loss,
    at_loss,
    bn_margin,
    cc_loss,
    contrast_scores,
    crd_loss,
    fitnet_loss,
    fsp_loss,
    fsp_matrix,
    ft_loss,
    hcl_loss,
    kdsvd_loss,
    nce_loss,
    nst_loss,
    ofd_loss,
    pkt_loss,
    rkd_loss,
    sp_loss,
    vid_loss,
)

SHAPES = [((4, 3, 4, 4), (4, 5, 4, 4)), ((3, 2, 8, 8), (3, 6, 4, 4)), ((5, 4, 2, 2), (5, 3, 4, 4))]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _pool_by_blocks(x, size):
    """Average over non-overlapping blocks (the case of integer size ratios)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, size, h // size, size, w // size).mean(dim=(3, 5))


def _matched(a, b):
    size = min(a.shape[-1], b.shape[-1])
    return _pool_by_blocks(a, size), _pool_by_blocks(b, size)


def _huber(x):
    return torch.where(x.abs() < 1, 0.5 * x**2, x.abs() - 0.5).mean()


def _close(actual, expected, rtol=1e-7):
    assert torch.allclose(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=rtol, atol=1e-10), (
        actual,
        expected,
    )


@pytest.mark.parametrize(("s_shape", "t_shape"), SHAPES)
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_at_loss(s_shape, t_shape, p):
    f_s, f_t = _randn(*s_shape, seed=1), _randn(*t_shape, seed=2)
    a, b = _matched(f_s, f_t)
    total = 0.0
    for i in range(a.shape[0]):
        q_s = sum(a[i, c].abs() ** p for c in range(a.shape[1])) / a.shape[1]
        q_t = sum(b[i, c].abs() ** p for c in range(b.shape[1])) / b.shape[1]
        q_s, q_t = q_s.flatten() / q_s.flatten().norm(), q_t.flatten() / q_t.flatten().norm()
        total += ((q_s - q_t) ** 2).sum()
    _close(at_loss(f_s, f_t, p), total / (a.shape[0] * a.shape[2] * a.shape[3]))


@pytest.mark.parametrize(("s_shape", "t_shape"), SHAPES)
def test_sp_loss(s_shape, t_shape):
    f_s, f_t = _randn(*s_shape, seed=3), _randn(*t_shape, seed=4)
    n = s_shape[0]

    def gram(x):
        rows = [[float(x[i].flatten() @ x[j].flatten()) for j in range(n)] for i in range(n)]
        return torch.tensor(
            [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows], dtype=torch.float64
        )

    _close(sp_loss(f_s, f_t), ((gram(f_t) - gram(f_s)) ** 2).sum() / n**2)


@pytest.mark.parametrize("dims", [(6, 8, 8), (5, 3, 16), (8, 10, 4)])
def test_rkd_loss(dims):
    n, d_s, d_t = dims
    s, t = _randn(n, d_s, seed=5), _randn(n, d_t, seed=6)

    def distances(x):
        d = torch.stack([torch.stack([(x[i] - x[j]).norm() for j in range(n)]) for i in range(n)])
        return d / (d.sum() / (n * n - n))

    def angles(x):
        values = []
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    e1, e2 = x[j] - x[i], x[k] - x[i]
                    both = e1.norm() > 0 and e2.norm() > 0
                    values.append(
                        e1 @ e2 / (e1.norm() * e2.norm()) if both else torch.tensor(0.0, dtype=x.dtype)
                    )
        return torch.stack(values)

    expected = 25 * _huber(distances(s) - distances(t)) + 50 * _huber(angles(s) - angles(t))
    _close(rkd_loss(s, t), expected, rtol=1e-5)
    _close(
        rkd_loss(s, t, distance_weight=1.0, angle_weight=0.0), _huber(distances(s) - distances(t)), rtol=1e-5
    )


@pytest.mark.parametrize("dims", [(6, 8, 8), (5, 3, 16)])
def test_pkt_loss(dims):
    n, d_s, d_t = dims
    s, t = _randn(n, d_s, seed=7), _randn(n, d_t, seed=8)
    eps = 1e-7

    def conditional(x):
        unit = [row / (row.norm() + eps) for row in x]
        sim = torch.tensor([[(float(a @ b) + 1) / 2 for b in unit] for a in unit], dtype=torch.float64)
        return sim / sim.sum(dim=1, keepdim=True)

    p_s, p_t = conditional(s), conditional(t)
    expected = sum(
        p_t[i, j] * math.log((p_t[i, j] + eps) / (p_s[i, j] + eps)) for i in range(n) for j in range(n)
    )
    _close(pkt_loss(s, t), expected / n**2)


@pytest.mark.parametrize(("s_shape", "t_shape"), SHAPES)
def test_nst_loss(s_shape, t_shape):
    f_s, f_t = _randn(*s_shape, seed=9), _randn(*t_shape, seed=10)
    a, b = _matched(f_s, f_t)

    def patterns(x, i):
        return [x[i, c].flatten() / x[i, c].flatten().norm() for c in range(x.shape[1])]

    def kernel_mean(xs, ys):
        return sum(float(x @ y) ** 2 for x in xs for y in ys) / (len(xs) * len(ys))

    per_sample = []
    for i in range(a.shape[0]):
        ps, pt = patterns(a, i), patterns(b, i)
        per_sample.append((kernel_mean(pt, pt), kernel_mean(ps, ps), kernel_mean(ps, pt)))
    tt, ss, st = (sum(v[k] for v in per_sample) / a.shape[0] for k in range(3))
    _close(nst_loss(f_s, f_t), tt + ss - 2 * st)


@pytest.mark.parametrize("shape", [(4, 6), (7, 3)])
def test_cc_loss(shape):
    s, t = _randn(*shape, seed=11), _randn(*shape, seed=12)
    d = [(s[i] - t[i]).abs() for i in range(shape[0])]
    expected = sum(float(d[i] @ d[i + 1]) for i in range(shape[0] - 1)) / (shape[0] - 1)
    _close(cc_loss(s, t), expected)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 5, 2, 2)])
def test_vid_loss(shape):
    mean, target, raw = _randn(*shape, seed=13), _randn(*shape, seed=14), _randn(shape[1], seed=15)
    eps = 1e-5
    total = 0.0
    for c in range(shape[1]):
        var = math.log(1 + math.exp(float(raw[c]))) + eps
        total += float((0.5 * ((mean[:, c] - target[:, c]) ** 2 / var + math.log(var))).sum())
    _close(vid_loss(mean, target, raw, eps), total / mean.numel())


def test_fitnet_loss():
    a, b = _randn(2, 3, 4, 4, seed=16), _randn(2, 3, 4, 4, seed=17)
    _close(fitnet_loss(a, b), float(((a - b) ** 2).sum()) / a.numel())


@pytest.mark.parametrize("channels", [(4, 6, 3), (8, 5, 7)])
def test_kdsvd_loss(channels):
    n, k = 3, 1
    s_maps = [_randn(n, c, 4, 4, seed=20 + i) for i, c in enumerate(channels)]
    t_maps = [_randn(n, c, 4, 4, seed=30 + i) for i, c in enumerate(channels)]

    def top(x, count):
        _, values, vh = torch.linalg.svd(x.flatten(1).t(), full_matrices=False)  # (H·W, C) per sample
        vectors = vh.t()[:, :count]
        return values[:count] / values[:count].norm(), vectors / vectors.norm(dim=0, keepdim=True)

    total = 0.0
    previous = None
    for f_s, f_t in zip(s_maps, t_maps, strict=True):
        layer = []
        for i in range(n):
            values_t, v_t = top(f_t[i], k)
            _, v_s = top(f_s[i], k + 3)
            aligned = []
            for j in range(k):
                cosines = v_s.t() @ v_t[:, j]
                best = int(cosines.abs().argmax())
                aligned.append(v_s[:, best] * torch.sign(cosines[best]))
            layer.append((torch.stack(aligned, 1) * values_t, v_t * values_t))
        if previous is not None:
            for i in range(n):
                (a_s, a_t), (b_s, b_t) = layer[i], previous[i]
                for u in range(a_s.shape[0]):
                    for w in range(b_s.shape[0]):
                        rbf_s = torch.exp(-((a_s[u] - b_s[w]) ** 2) / 8)
                        rbf_t = torch.exp(-((a_t[u] - b_t[w]) ** 2) / 8)
                        total += float(((rbf_s - rbf_t) ** 2).sum())
        previous = layer
    _close(kdsvd_loss(s_maps, t_maps, k), total / n, rtol=1e-6)


@pytest.mark.parametrize(("batch", "negatives", "dim"), [(4, 7, 8), (3, 16, 5)])
def test_nce_and_crd_loss(batch, negatives, dim):
    count, temperature = 100, 0.07
    v_s = torch.nn.functional.normalize(_randn(batch, dim, seed=40), dim=1)
    v_t = torch.nn.functional.normalize(_randn(batch, dim, seed=41), dim=1)
    rows_s, rows_t = _randn(batch, negatives + 1, dim, seed=42), _randn(batch, negatives + 1, dim, seed=43)
    z_s, z_t = 3.5, 0.7

    def nce(anchor, rows, z):
        noise, total = negatives / count, 0.0
        for i in range(batch):
            scores = [math.exp(float(rows[i, j] @ anchor[i]) / temperature) / z for j in range(negatives + 1)]
            total += math.log(scores[0] / (scores[0] + noise + 1e-7))
            total += sum(math.log(noise / (p + noise + 1e-7)) for p in scores[1:])
        return -total / batch

    expected = nce(v_s, rows_t, z_s) + nce(v_t, rows_s, z_t)
    _close(crd_loss(v_s, v_t, rows_s, rows_t, (z_s, z_t), count, temperature), expected)
    _close(nce_loss(contrast_scores(v_s, rows_t, temperature) / z_s, count), nce(v_s, rows_t, z_s))


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 2, 2, 5)])
@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_loss(shape, margin):
    s, t = _randn(*shape, seed=50), _randn(*shape, seed=51)
    total = 0.0
    for x, y in zip(s.flatten().tolist(), t.flatten().tolist(), strict=True):
        if y > 0 and x <= margin:
            total += (x - margin) ** 2
        elif y <= 0 and x > -margin:
            total += (x + margin) ** 2
    _close(ab_loss(s, t, margin), total / shape[0])


@pytest.mark.parametrize(("s_shape", "t_shape"), SHAPES)
@pytest.mark.parametrize(("p1", "p2"), [(2.0, 1.0), (2.0, 2.0), (1.0, 1.0)])
def test_ft_loss(s_shape, t_shape, p1, p2):
    f_s, f_t = _randn(*s_shape, seed=52), _randn(*t_shape, seed=53)
    a, b = _matched(f_s, f_t)
    total = 0.0
    for i in range(a.shape[0]):
        m_s = (a[i].abs() ** p1).mean(dim=0).flatten()
        m_t = (b[i].abs() ** p1).mean(dim=0).flatten()
        total += float(((m_s / m_s.norm() - m_t / m_t.norm()).abs() ** p2).sum())
    _close(ft_loss(f_s, f_t, p1, p2), total / (a.shape[0] * a.shape[2] * a.shape[3]))


def _fsp_reference(bottom, top):
    bottom, top = _matched(bottom, top)
    n, c_b, h, w = bottom.shape
    out = torch.zeros(n, top.shape[1], c_b, dtype=torch.float64)
    for i in range(n):
        for u in range(top.shape[1]):
            for v in range(c_b):
                out[i, u, v] = (top[i, u] * bottom[i, v]).sum() / (h * w)
    return out


@pytest.mark.parametrize("sizes", [(8, 8, 4), (4, 8, 8)])
def test_fsp_matrix_and_loss(sizes):
    channels = (3, 4, 2)
    s_maps = [_randn(2, c, h, h, seed=60 + i) for i, (c, h) in enumerate(zip(channels, sizes, strict=True))]
    t_maps = [_randn(2, c, h, h, seed=70 + i) for i, (c, h) in enumerate(zip(channels, sizes, strict=True))]
    _close(fsp_matrix(s_maps[0], s_maps[1]), _fsp_reference(s_maps[0], s_maps[1]))
    expected = sum(
        float(
            (
                (_fsp_reference(s_maps[k], s_maps[k + 1]) - _fsp_reference(t_maps[k], t_maps[k + 1])) ** 2
            ).mean()
        )
        for k in range(2)
    )
    _close(fsp_loss(s_maps, t_maps), expected)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 5, 2, 2)])
def test_ofd_loss(shape):
    s, t = _randn(*shape, seed=80), _randn(*shape, seed=81)
    margin = -_randn(shape[1], seed=82).abs()
    total = 0.0
    for i in range(shape[0]):
        for c in range(shape[1]):
            m = float(margin[c])
            for x, y in zip(s[i, c].flatten().tolist(), t[i, c].flatten().tolist(), strict=True):
                if y > 0:  # the teacher's neuron is on: plain L2
                    total += (x - y) ** 2
                elif y > m:  # off, above the margin: only a student above the teacher costs
                    total += (x - y) ** 2 if x > y else 0.0
                else:  # far below zero: the margin replaces the teacher value
                    total += (x - m) ** 2 if x > m else 0.0
    _close(ofd_loss(s, t, margin.view(1, -1, 1, 1)), total / shape[0])


def test_bn_margin():
    weight = torch.tensor([1.0, 0.5, 2.0, 0.1, 1.0, -1.5], dtype=torch.float64)
    bias = torch.tensor([0.0, 0.3, -1.0, 1.0, 4.0, 0.2], dtype=torch.float64)
    expected = []
    for w, b in zip(weight.tolist(), bias.tolist(), strict=True):
        s = abs(w)
        below = 0.5 * (1 + math.erf((-b / s) / math.sqrt(2)))  # P(x < 0) for x ~ N(b, s²)
        density = math.exp(-((b / s) ** 2) / 2) / math.sqrt(2 * math.pi)
        expected.append(b - s * density / below if below > 0.001 else -3 * s)
    _close(bn_margin(weight, bias), expected)
    assert (bn_margin(weight, bias) < 0).all()


@pytest.mark.parametrize("sizes", [(8, 4, 1), (2, 16)])
def test_hcl_loss(sizes):
    s_maps = [_randn(2, 3, h, h, seed=90 + i) for i, h in enumerate(sizes)]
    t_maps = [_randn(2, 3, h, h, seed=95 + i) for i, h in enumerate(sizes)]
    expected = 0.0
    for f_s, f_t in zip(s_maps, t_maps, strict=True):
        h = f_s.shape[2]
        terms = [(1.0, float(((f_s - f_t) ** 2).mean()))]
        for size in (4, 2, 1):
            if size < h:  # each pooled level weighs half the previous one
                pooled = _pool_by_blocks(f_s, size) - _pool_by_blocks(f_t, size)
                terms.append((terms[-1][0] / 2, float((pooled**2).mean())))
        expected += sum(w * v for w, v in terms) / sum(w for w, _ in terms)
    _close(hcl_loss(s_maps, t_maps), expected)
