"""A recurrent student for image teachers: an LSTM that reads the image one row at a time.

Long Short-Term Memory (Hochreiter & Schmidhuber, 1997), used as in the "sequential MNIST"
row-by-row setting. Distilling a convolutional teacher into it is distillation across model
families; it is trained at the logit level (KD, DKD, ...), having no spatial feature maps.
"""

from __future__ import annotations

from torch import Tensor, nn


class LastStep(nn.Module):
    """The last time step of a ``(batch, steps, features)`` sequence: the sequence embedding."""

    def forward(self, sequence: Tensor) -> Tensor:
        return sequence[:, -1]


class RowLSTM(nn.Module):
    """Reads a ``(batch, channels, height, width)`` image as ``height`` steps of
    ``channels × width`` values; the last step's hidden state feeds a linear classifier.

    Tap aliases (``feature_points``): ``sequence`` (``pool:input``, every step's output,
    ``(batch, height, hidden_size)``), ``embedding`` (``pool``, the last step), ``logits`` (``fc``).

    Args:
        in_channels: Input image channels.
        image_size: Width of the input images (each row holds ``in_channels * image_size`` values).
        hidden_size: LSTM hidden units.
        num_layers: Stacked LSTM layers.
        num_classes: Number of classes.
        dropout: Dropout between stacked LSTM layers (needs ``num_layers`` > 1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        hidden_size: int = 64,
        num_layers: int = 1,
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.row_size = in_channels * image_size
        self.lstm = nn.LSTM(self.row_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.pool = LastStep()
        self.fc = nn.Linear(hidden_size, num_classes)
        self.feature_points = {"sequence": "pool:input", "embedding": "pool", "logits": "fc"}

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] * x.shape[3] != self.row_size:
            raise ValueError(
                f"RowLSTM expects (batch, channels, height, width) images with channels × width = "
                f"{self.row_size} (in_channels × image_size), got shape {x.shape}"
            )
        rows = x.permute(0, 2, 1, 3).flatten(2)  # (batch, height, channels × width)
        sequence, _ = self.lstm(rows)
        return self.fc(self.pool(sequence))
