"""Parity of the logit distillation losses with their papers' formulas, written out here in float64."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.losses import DIST, DKD, KD, MLKD, dist_loss, dkd_loss, kd_loss, mlkd_loss
from kdlab.outputs import Batch, Outputs

SHAPES = [(2, 3), (3, 5), (16, 10), (64, 100)]
TEMPERATURES = [0.5, 1.0, 4.0, 8.0]
RTOL = 1e-5


def logits(shape: tuple[int, int], seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator) * scale


def _cases():
    for index, shape in enumerate(SHAPES):
        for temperature in TEMPERATURES:
            yield pytest.param(shape, temperature, index, id=f"{shape[0]}x{shape[1]}-T{temperature}")


def cases() -> list:
    return list(_cases())


def softmax64(z: torch.Tensor, temperature: float) -> torch.Tensor:
    e = torch.exp(z.double() / temperature - (z.double() / temperature).max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ_c p log(p / q) per row, with 0 log 0 = 0."""
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return terms.sum(dim=1)


def close(actual: torch.Tensor, expected: torch.Tensor, temperature: float = 1.0) -> None:
    """fp32 result vs float64 reference: relative 1e-5. The losses are T² times differences of
    O(1) log-probabilities that fp32 resolves to ~1e-7, so near-zero values (near-uniform
    distributions at high T) are compared with an absolute 1e-7·T² instead."""
    assert actual.dtype == torch.float32 and actual.dim() == 0
    torch.testing.assert_close(actual.double(), expected, rtol=RTOL, atol=1e-7 * max(1.0, temperature**2))


# ----------------------------------------------------------------------------- KD
def kd_reference(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    return kl_rows(softmax64(t, temperature), softmax64(s, temperature)).mean() * temperature**2


def zscore64(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    mean = z.sum(dim=1, keepdim=True) / z.shape[1]
    std = torch.sqrt(((z - mean) ** 2).sum(dim=1, keepdim=True) / (z.shape[1] - 1))
    return (z - mean) / (std + 1e-7)


@pytest.mark.parametrize(("shape", "temperature", "seed"), cases())
def test_kd_matches_hinton(shape, temperature, seed):
    s, t = logits(shape, seed), logits(shape, seed + 100)
    close(kd_loss(s, t, temperature), kd_reference(s, t, temperature), temperature)


@pytest.mark.parametrize(("shape", "temperature", "seed"), cases())
def test_kd_standardized_matches_zscored_hinton(shape, temperature, seed):
    s, t = logits(shape, seed) + 5.0, logits(shape, seed + 100) * 4
    expected = kd_reference(zscore64(s), zscore64(t), temperature)
    close(kd_loss(s, t, temperature, standardize=True), expected, temperature)


def test_standardized_kd_ignores_logit_shift_and_scale():
    s, t = logits((8, 10), 0), logits((8, 10), 1)
    base = kd_loss(s, t, 2.0, standardize=True)
    torch.testing.assert_close(
        kd_loss(3 * s + 7, 0.5 * t - 2, 2.0, standardize=True), base, rtol=1e-4, atol=1e-6
    )
    assert not torch.allclose(kd_loss(3 * s, t, 2.0), kd_loss(s, t, 2.0))


# ----------------------------------------------------------------------------- DKD
def dkd_reference(s, t, target, alpha, beta, temperature, dtype=torch.float64):
    """The paper's decomposition, from probabilities (no log-sum-exp tricks)."""
    p_s = torch.softmax(s.to(dtype) / temperature, dim=1)
    p_t = torch.softmax(t.to(dtype) / temperature, dim=1)
    mask = torch.nn.functional.one_hot(target, s.shape[1]).bool()
    b_s = torch.stack([p_s[mask], (p_s * ~mask).sum(dim=1)], dim=1)
    b_t = torch.stack([p_t[mask], (p_t * ~mask).sum(dim=1)], dim=1)
    rest_s = p_s[~mask].view(len(s), -1) / b_s[:, 1:]
    rest_t = p_t[~mask].view(len(t), -1) / b_t[:, 1:]
    tckd, nckd = kl_rows(b_t, b_s), kl_rows(rest_t, rest_s)
    return (alpha * tckd + beta * nckd).mean() * temperature**2


@pytest.mark.parametrize(("shape", "temperature", "seed"), cases())
def test_dkd_matches_decoupled_formula(shape, temperature, seed):
    s, t = logits(shape, seed), logits(shape, seed + 100)
    target = torch.randint(0, shape[1], (shape[0],), generator=torch.Generator().manual_seed(seed))
    for alpha, beta in ((1.0, 8.0), (0.5, 2.0)):
        expected = dkd_reference(s, t, target, alpha, beta, temperature)
        close(dkd_loss(s, t, target, alpha, beta, temperature), expected, temperature)
        # ...and equal to the plain fp32 formula wherever no probability underflows
        plain = dkd_reference(s, t, target, alpha, beta, temperature, dtype=torch.float32)
        torch.testing.assert_close(
            dkd_loss(s, t, target, alpha, beta, temperature), plain, rtol=RTOL, atol=1e-6
        )


def test_dkd_with_alpha_beta_one_is_not_kd_but_sums_its_parts():
    # KD = TCKD + (1 - p_t) NCKD: with the teacher sure of the target, DKD(1, 1) ≈ KD + NCKD.
    s, t = logits((4, 6), 0), logits((4, 6), 1)
    target = torch.tensor([0, 1, 2, 3])
    tckd = dkd_loss(s, t, target, alpha=1.0, beta=0.0, temperature=2.0)
    nckd = dkd_loss(s, t, target, alpha=0.0, beta=1.0, temperature=2.0)
    torch.testing.assert_close(dkd_loss(s, t, target, 1.0, 1.0, 2.0), tckd + nckd)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_is_finite_where_probabilities_underflow(temperature):
    s, t = logits((8, 10), 0, scale=1.0), logits((8, 10), 1, scale=1.0)
    target = torch.arange(8)
    s[torch.arange(8), target] += 400.0 * temperature  # student certain of the target
    t[torch.arange(8), (target + 1) % 10] += 300.0 * temperature  # teacher certain of another class
    plain = dkd_reference(s, t, target, 1.0, 8.0, temperature, dtype=torch.float32)
    assert not torch.isfinite(plain), "the test inputs should make the plain fp32 formula overflow"
    s.requires_grad_(True)
    loss = dkd_loss(s, t, target, 1.0, 8.0, temperature)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    close(loss.detach(), dkd_reference(s.detach(), t, target, 1.0, 8.0, temperature), temperature)


def test_dkd_of_two_classes_is_tckd_only_and_equals_kd():
    s, t = logits((5, 2), 11), logits((5, 2), 12)
    target = torch.tensor([0, 1, 1, 0, 1])
    torch.testing.assert_close(dkd_loss(s, t, target, 1.0, 8.0, 2.0), kd_loss(s, t, 2.0))


def test_dkd_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- DIST
def pearson64(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Pearson correlation of each row pair: cov / (std·std), eps added to the denominator."""
    n = a.shape[1]
    a_c, b_c = a - a.sum(dim=1, keepdim=True) / n, b - b.sum(dim=1, keepdim=True) / n
    cov = (a_c * b_c).sum(dim=1)
    return cov / (torch.sqrt((a_c**2).sum(dim=1)) * torch.sqrt((b_c**2).sum(dim=1)) + eps)


def dist_reference(s, t, beta, gamma, temperature, eps):
    y_s, y_t = softmax64(s, temperature), softmax64(t, temperature)
    inter = (1 - pearson64(y_s, y_t, eps)).mean()
    intra = (1 - pearson64(y_s.T, y_t.T, eps)).mean()
    return temperature**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize(("shape", "temperature", "seed"), cases())
def test_dist_matches_pearson_relations(shape, temperature, seed):
    s, t = logits(shape, seed), logits(shape, seed + 100)
    expected = dist_reference(s, t, 1.0, 1.0, temperature, 0.0)
    close(dist_loss(s, t, 1.0, 1.0, temperature, eps=0.0), expected, temperature)
    close(
        dist_loss(s, t, 2.0, 0.5, temperature), dist_reference(s, t, 2.0, 0.5, temperature, 1e-8), temperature
    )


def test_dist_is_zero_for_identical_predictions():
    s = logits((8, 10), 0)
    assert dist_loss(s, s.clone(), temperature=4.0, eps=0.0).abs() < 1e-5


# ----------------------------------------------------------------------------- MLKD
def mlkd_reference(s, t, temperatures, weights=(1.0, 1.0, 1.0)):
    total = torch.zeros((), dtype=torch.float64)
    batch, classes = s.shape
    for temperature in temperatures:
        p_s, p_t = softmax64(s, temperature), softmax64(t, temperature)
        instance = kl_rows(p_t, p_s).mean() * temperature**2
        batch_gap = sum((p_t[i] @ p_t[j] - p_s[i] @ p_s[j]) ** 2 for i in range(batch) for j in range(batch))
        class_gap = sum(
            (p_t[:, a] @ p_t[:, b] - p_s[:, a] @ p_s[:, b]) ** 2
            for a in range(classes)
            for b in range(classes)
        )
        total = (
            total + weights[0] * instance + weights[1] * batch_gap / batch + weights[2] * class_gap / classes
        )
    return total


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (12, 7)])
@pytest.mark.parametrize("temperatures", [(4.0,), (2.0, 3.0, 4.0, 5.0, 6.0), (0.5, 8.0)])
def test_mlkd_matches_three_level_alignment(shape, temperatures):
    s, t = logits(shape, 3), logits(shape, 4)
    close(mlkd_loss(s, t, temperatures), mlkd_reference(s, t, temperatures))
    weighted = mlkd_loss(s, t, temperatures, instance_weight=0.5, batch_weight=2.0, class_weight=0.0)
    close(weighted, mlkd_reference(s, t, temperatures, (0.5, 2.0, 0.0)))


def test_mlkd_of_one_temperature_without_correlations_is_kd():
    s, t = logits((16, 10), 5), logits((16, 10), 6)
    torch.testing.assert_close(mlkd_loss(s, t, [4.0], 1.0, 0.0, 0.0), kd_loss(s, t, 4.0))


# ----------------------------------------------------------------------------- module shells
def test_modules_call_their_functions_with_their_hyper_parameters():
    s, t = logits((16, 10), 7), logits((16, 10), 8)
    batch = Batch(torch.zeros(16, 1), torch.randint(0, 10, (16,)), torch.arange(16))
    student, teacher = Outputs(s), Outputs(t)
    assert KD(0.9, 2.0, standardize=True)(student, teacher, batch) == kd_loss(s, t, 2.0, True)
    assert DKD(1.0, 0.5, 6.0, 3.0)(student, teacher, batch) == dkd_loss(s, t, batch.targets, 0.5, 6.0, 3.0)
    assert DIST(2.0, 1.5, 0.5, 4.0)(student, teacher, batch) == dist_loss(s, t, 1.5, 0.5, 4.0)
    assert MLKD(0.9, [2.0, 4.0], 1.0, 0.5, 0.25)(student, teacher, batch) == mlkd_loss(
        s, t, [2.0, 4.0], 1.0, 0.5, 0.25
    )


def test_learned_temperature_tensor_flows_through_every_loss():
    s, t = logits((8, 10), 9).requires_grad_(True), logits((8, 10), 10)
    target = torch.randint(0, 10, (8,))
    for loss_of in (
        lambda T: kd_loss(s, t, T),
        lambda T: dkd_loss(s, t, target, temperature=T),
        lambda T: dist_loss(s, t, temperature=T),
    ):
        temperature = torch.tensor(3.0, requires_grad=True)
        loss = loss_of(temperature)
        assert loss.dim() == 0
        torch.testing.assert_close(loss, loss_of(3.0))
        loss.backward()
        assert temperature.grad is not None and math.isfinite(temperature.grad.item())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: KD(temperature=0.0), "temperature must be a number > 0"),
        (lambda: DKD(temperature=-1.0), "temperature must be a number > 0"),
        (lambda: DKD(beta=-8.0), "beta must be a number >= 0"),
        (lambda: DIST(gamma=-1.0), "gamma must be a number >= 0"),
        (lambda: MLKD(temperatures=[]), "at least one temperature"),
        (lambda: MLKD(temperatures=[4.0, -2.0]), "temperature must be a number > 0"),
        (lambda: MLKD(class_weight=-1.0), "class_weight must be a number >= 0"),
    ],
)
def test_bad_hyper_parameters_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()
