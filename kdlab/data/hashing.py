"""Counter-based 64-bit hashing (the SplitMix64 finaliser), on Python ints and on int64 tensors.

Randomness keyed on *what* is drawn (seed, epoch, sample index) rather than on the state of a
generator gives the same answer on any device, any process and after any resume, and needs no
RNG state to be saved. Tensors hold signed int64, so the unsigned 64-bit arithmetic of SplitMix64
is done in two's complement: products wrap modulo 2**64, and right shifts are made logical by
masking off the copied sign bits.
"""

from __future__ import annotations

from torch import Tensor

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def mix64(value: int) -> int:
    """SplitMix64 of a Python int, as an unsigned 64-bit int (the reference for :func:`mix64_tensor`)."""
    z = (value + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _shift_right(z: Tensor, bits: int) -> Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64_tensor(values: Tensor) -> Tensor:
    """SplitMix64 of each element of an int64 tensor, as int64 holding the unsigned result's bits.

    Runs on the tensor's device without host synchronisation; bit-identical to :func:`mix64`.
    """
    z = values + _signed(_GOLDEN)
    z = (z ^ _shift_right(z, 30)) * _signed(_MUL1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MUL2)
    return z ^ _shift_right(z, 31)


def counter_key(*counters: int) -> int:
    """One 64-bit key from a sequence of integers (e.g. seed, epoch), each folded in by SplitMix64."""
    key = 0
    for counter in counters:
        key = mix64(key ^ (counter & _MASK64))
    return key


def nonnegative(values: Tensor) -> Tensor:
    """The top 63 bits of int64 hash values, as non-negative int64 (ready for ``%``)."""
    return _shift_right(values, 1)


def as_int64(value: int) -> int:
    """An unsigned 64-bit key as the int64 scalar that carries the same bits."""
    return _signed(value)
