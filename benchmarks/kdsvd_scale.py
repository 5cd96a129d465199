"""How big kdlab's KD-SVD term is next to mdistiller's, on real CIFAR-10 features: the weight that
gives kdlab's form the push of mdistiller's recipe (weight 1).

    python benchmarks/kdsvd_scale.py --root /tmp/cifar10 --teacher TEACHER.ckpt [--batches 8]

kdlab follows the paper and RepDistiller: the SVD of each sample's (H·W)×C feature matrix.
mdistiller reshapes the map to (C·H)×W instead, which gives other singular vectors and values
about two orders of magnitude smaller, so its recipe weight (1.0) does not carry over. For a
trained resnet20 teacher and a freshly initialised resnet8 student (the start of a run) this
prints, per batch and as medians, both terms' values and the norms of their gradients with respect
to the student's parameters, and the ratio mdistiller/kdlab of those norms: the kdlab weight whose
gradient matches mdistiller's at weight 1.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from kdlab.data import CIFARDataModule
from kdlab.losses.kdsvd import kdsvd_loss
from kdlab.models.cifar import resnet8, resnet20
from kdlab.teacher import load_teacher_weights

STAGES = ("layer1", "layer2", "layer3")


def mdistiller_form(student: list, teacher: list, k: int = 1) -> torch.Tensor:
    """KD-SVD with mdistiller's reshape: each map viewed as a (C·H)×W matrix (for comparison only)."""

    def top(feature: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = feature.shape
        _, values, vectors_h = torch.linalg.svd(feature.reshape(b, c * h, w).float(), full_matrices=False)
        values, vectors = values.nan_to_num(), vectors_h.transpose(1, 2).nan_to_num()
        return F.normalize(values[:, :n], dim=1), F.normalize(vectors[:, :, :n], dim=1)

    total, previous = 0.0, None
    for f_s, f_t in zip(student, teacher, strict=True):
        values_t, vectors_t = top(f_t, k)
        _, vectors_s = top(f_s, k + 3)
        cosine = vectors_s.transpose(1, 2) @ vectors_t
        best = cosine.abs().amax(dim=1, keepdim=True)
        vectors_s = vectors_s @ torch.where(cosine.abs() == best, cosine.sign(), torch.zeros_like(cosine))
        vectors_s, vectors_t = vectors_s * values_t[:, None], vectors_t * values_t[:, None]
        if previous is not None:
            rbf_s = torch.exp(-(vectors_s[:, :, None] - previous[0][:, None]).pow(2) / 8)
            rbf_t = torch.exp(-(vectors_t[:, :, None] - previous[1][:, None]).pow(2) / 8)
            total = total + (rbf_s - rbf_t.detach()).pow(2).nan_to_num().sum()
        previous = (vectors_s, vectors_t)
    return total / student[0].shape[0]


def features(network: torch.nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    taps: dict[str, torch.Tensor] = {}
    modules = dict(network.named_modules())
    handles = [modules[s].register_forward_hook(lambda m, i, o, s=s: taps.update({s: o})) for s in STAGES]
    network(inputs)
    for handle in handles:
        handle.remove()
    return [taps[s] for s in STAGES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="prepared CIFAR-10 (holds cifar-10-batches-py)")
    parser.add_argument("--teacher", required=True, help="a trained resnet20 (kdlab checkpoint or weights)")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    teacher = resnet20(num_classes=10)
    load_teacher_weights(teacher, args.teacher)
    teacher.eval()
    data = CIFARDataModule("cifar10", args.root, batch_size=64)
    data.setup("fit")
    rows = []
    for index, batch in enumerate(data.train_dataloader()):
        if index == args.batches:
            break
        inputs = data.augment_batch(batch, epoch=0)[0]
        with torch.no_grad():
            teacher_maps = features(teacher, inputs)
        torch.manual_seed(index)
        student = resnet8(num_classes=10)
        row = []
        for form in (kdsvd_loss, mdistiller_form):
            student.zero_grad()
            value = form(features(student, inputs), teacher_maps)
            value.backward()
            norm = torch.nn.utils.get_total_norm([p.grad for p in student.parameters() if p.grad is not None])
            row += [value.item(), norm.item()]
        rows.append(row)
        kdlab, mdistiller = f"{row[0]:.4g} (gradient norm {row[1]:.3g})", f"{row[2]:.4g} ({row[3]:.3g})"
        print(f"batch {index}: kdlab {kdlab}, mdistiller {mdistiller}")
    median = [statistics.median(column) for column in zip(*rows)]
    print(f"medians: kdlab value {median[0]:.4g}, gradient norm {median[1]:.3g}; "
          f"mdistiller value {median[2]:.4g}, gradient norm {median[3]:.3g}")  # fmt: skip
    print(f"value ratio mdistiller/kdlab {median[2] / median[0]:.3g}; "
          f"gradient-norm ratio {median[3] / median[1]:.3g} (the matching kdlab weight)")  # fmt: skip


if __name__ == "__main__":
    main()
