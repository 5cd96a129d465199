"""Hinton KD against the textbook formula."""

from __future__ import annotations

import pytest
import torch

from kdlab.losses import KD, kd_loss
from kdlab.outputs import Batch, Outputs


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("shape", [(1, 2), (16, 10), (64, 100)])
def test_kd_loss_is_t2_scaled_kl_summed_over_classes_averaged_over_batch(shape, temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(shape) * 5, torch.randn(shape) * 5
    p_t = torch.softmax(teacher / temperature, 1)
    log_p_s = torch.log_softmax(student / temperature, 1)
    expected = (p_t * (p_t.log() - log_p_s)).sum(1).mean() * temperature**2
    assert torch.allclose(kd_loss(student, teacher, temperature), expected, rtol=1e-5, atol=1e-7)


def test_kd_is_zero_for_identical_logits_and_module_uses_temperature():
    logits = torch.randn(8, 5)
    assert kd_loss(logits, logits).abs() < 1e-6
    student, teacher = Outputs(torch.randn(8, 5)), Outputs(torch.randn(8, 5))
    batch = Batch(torch.zeros(8, 1), torch.zeros(8, dtype=torch.long), torch.arange(8))
    assert torch.equal(KD(0.5, 2.0)(student, teacher, batch), kd_loss(student.logits, teacher.logits, 2.0))
    with pytest.raises(ValueError, match="temperature"):
        KD(temperature=0)
    with pytest.raises(ValueError, match="weight"):
        KD(weight=-1)
