"""Figures of the dashboard, drawn with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path


def reliability_diagram(rows: list[list], ece: float, path: Path, title: str) -> Path:
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, and the
    share of samples per bin; ``rows`` are :func:`reliability_rows`' (lower, upper, count,
    confidence, accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lower = [r[0] for r in rows]
    width = rows[0][1] - rows[0][0] if rows else 0.0
    total = max(sum(r[2] for r in rows), 1)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(lower, [r[4] for r in rows], width=width, align="edge", edgecolor="black", label="accuracy")
    gaps = [r[3] - r[4] if r[2] else 0.0 for r in rows]
    top.bar(
        lower,
        gaps,
        bottom=[r[4] for r in rows],
        width=width,
        align="edge",
        color="red",
        alpha=0.3,
        label="gap",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1)
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"{title} (ECE {100 * ece:.2f}%)")
    top.legend(loc="upper left")
    bottom.bar(lower, [r[2] / total for r in rows], width=width, align="edge", color="gray")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("samples")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
