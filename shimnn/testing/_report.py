"""Comparing two tensors bit for bit (or within a tolerance), and saying how they differ.

A comparison yields a :class:`TensorDiff`: whether the tensors agree and, when they do not, the
facts a person needs to act: how many elements differ, the largest absolute and relative
differences and where, and the special cases a tolerance would hide (the sign of a zero, a NaN
against a number, two NaNs with different bits).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["ParityError", "TensorDiff", "assert_bitwise_equal", "compare_tensors"]

_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
         torch.bfloat16: torch.int16}
# Significant digits that tell two neighbouring values of each type apart.
_DIGITS = {torch.float64: 17, torch.float32: 9, torch.float16: 5, torch.bfloat16: 4}

_no_dispatch = torch._C.DisableTorchFunctionSubclass

# Kinds of difference a tolerance would hide (keys of TensorDiff.special).
ZERO_SIGN = "in the sign of zero"
NAN_BITS = "in the bits of a NaN"
NAN_VS_NUMBER = "NaN where torch has a number"
NUMBER_VS_NAN = "a number where torch has NaN"


class ParityError(AssertionError):
    """A tensor differs from torch's. ``report`` is the message; ``diffs`` the failing
    :class:`TensorDiff` records (``str()`` of each is its part of the report)."""

    def __init__(self, report: str, diffs: list[TensorDiff]) -> None:
        super().__init__(report)
        self.report = report
        self.diffs = diffs


@dataclass
class TensorDiff:
    """How ``actual`` (shimnn's) compares with ``expected`` (torch's), both named ``name``.

    ``lines`` hold the details when they differ; ``verdict`` the float64 rerun's finding.
    """

    name: str
    equal: bool
    summary: str
    lines: list[str] = field(default_factory=list)
    verdict: str | None = None
    max_abs: float = 0.0
    dtype: torch.dtype | None = None  # set when values were compared (same dtype and shape)
    numeric: int = 0  # elements whose values differ (not only a zero's sign or a NaN's bits)
    special: dict[str, int] = field(default_factory=dict)  # ZERO_SIGN, NAN_BITS... -> count

    def __str__(self) -> str:
        parts = [f"{self.name}: {self.summary}", *(f"  {line}" for line in self.lines)]
        if self.verdict:
            parts.append(f"  {self.verdict}")
        return "\n".join(parts)


def _describe(t: Any) -> str:
    if t is None:
        return "None"
    if not isinstance(t, Tensor):
        return f"{type(t).__name__} {t!r}"
    return f"{str(t.dtype).removeprefix('torch.')} tensor of shape {tuple(t.shape)}"


def _value(x: float, dtype: torch.dtype) -> str:
    if math.isnan(x):
        return "nan"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    return f"{x:.{_DIGITS.get(dtype, 17)}g}"


def _index(flat: int, shape: torch.Size) -> str:
    if len(shape) == 0:
        return "()"
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return "(" + ", ".join(str(i) for i in reversed(idx)) + ("," if len(shape) == 1 else "") + ")"


def _bits_hex(t: Tensor, i: int) -> str:
    width = t.element_size() * 2
    return f"0x{int(t[i].item()) & ((1 << (4 * width)) - 1):0{width}x}"


def bits_equal(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape and bits (the fast check before a full :func:`compare_tensors`)."""
    with _no_dispatch():
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
            return False
        bits = _BITS.get(a.dtype)
        if a.is_complex():
            a, b = torch.view_as_real(a), torch.view_as_real(b)
            bits = _BITS.get(a.dtype)
        if bits is None:
            return torch.equal(a, b)
        return torch.equal(a.detach().contiguous().view(bits), b.detach().contiguous().view(bits))


def bitwise_identical(a: Any, b: Any) -> bool:
    """Bit for bit the same: tensors by :func:`bits_equal`; Python floats by their IEEE bits
    (so two NaNs with the same bits are identical and ``-0.0`` is not ``0.0``, unlike ``==``);
    lists, tuples and dicts element by element; anything else by ``==``."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and bits_equal(a, b)
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, float) and isinstance(b, float)
                and struct.pack("<d", a) == struct.pack("<d", b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(
            bitwise_identical(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(bitwise_identical(a[k], b[k]) for k in a)
    return bool(a == b)


def compare_tensors(actual: Any, expected: Any, name: str = "tensor", *,
                    atol: float | None = None, rtol: float | None = None) -> TensorDiff:
    """Compare shimnn's ``actual`` with torch's ``expected``.

    Without a tolerance the comparison is on bits: ``-0.0`` differs from ``0.0`` and NaNs are
    equal only with identical bits. With ``atol`` and/or ``rtol`` (the missing one is 0) an
    element agrees when ``|actual - expected| <= atol + rtol * |expected|``, NaN where torch
    has NaN, infinities equal. dtype and shape must match either way; ``None`` matches ``None``.
    """
    if actual is None or expected is None or not isinstance(actual, Tensor) or not isinstance(
            expected, Tensor):
        if actual is None and expected is None:
            return TensorDiff(name, True, "None in both")
        return TensorDiff(name, False, f"shimnn gave {_describe(actual)}, torch "
                                       f"{_describe(expected)}")
    with _no_dispatch():
        if actual.dtype != expected.dtype or actual.shape != expected.shape:
            return TensorDiff(name, False, f"shimnn gave a {_describe(actual)}, torch a "
                                           f"{_describe(expected)}")
        if bits_equal(actual, expected):
            desc = f"{str(actual.dtype).removeprefix('torch.')}, shape {tuple(actual.shape)}"
            return TensorDiff(name, True, f"bit-identical ({desc})")
        a = actual.detach().cpu().contiguous().view(-1)
        b = expected.detach().cpu().contiguous().view(-1)
        return _compare_values(a, b, actual.shape, name, atol, rtol)


def _compare_values(a: Tensor, b: Tensor, shape: torch.Size, name: str,
                    atol: float | None, rtol: float | None) -> TensorDiff:
    dtype = a.dtype
    desc = f"{str(dtype).removeprefix('torch.')}, shape {tuple(shape)}"
    tolerant = atol is not None or rtol is not None
    if a.is_complex():  # compared as (real, imaginary) pairs
        a, b = torch.view_as_real(a).reshape(-1), torch.view_as_real(b).reshape(-1)
        shape = torch.Size([*shape, 2])
    floating = a.dtype.is_floating_point
    bits = _BITS.get(a.dtype)
    ia: Tensor | None
    ib: Tensor | None
    if floating and bits is not None:
        ia, ib = a.view(bits), b.view(bits)
        bit_diff = ia != ib
    else:
        ia, ib = None, None
        bit_diff = a != b
    n_bits = int(bit_diff.sum())
    if tolerant and floating:
        close = torch.isclose(a, b, rtol=rtol or 0.0, atol=atol or 0.0, equal_nan=True)
        diff = ~close
    else:
        diff = bit_diff
    n_diff = int(diff.sum())
    tol = f"atol={atol or 0.0:g}, rtol={rtol or 0.0:g}"
    if n_diff == 0:
        if n_bits == 0:
            return TensorDiff(name, True, f"bit-identical ({desc})")
        return TensorDiff(name, True, f"within {tol} ({n_bits} of {a.numel()} elements not "
                                      f"bit-identical; {desc})")
    what = f"exceed {tol}" if tolerant else "differ"
    out = TensorDiff(name, False, f"{n_diff} of {a.numel()} elements {what} ({desc})",
                     dtype=dtype)
    if not floating:
        i = int(diff.nonzero()[0])
        out.lines.append(f"first at {_index(i, shape)}: shimnn {a[i].item()}, torch "
                         f"{b[i].item()}")
        return out
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    special = [  # (kind, how a report line says it, which elements, show their bits)
        (ZERO_SIGN, "differ only in the sign of zero", diff & (a == 0) & (b == 0), False),
        (NAN_VS_NUMBER, "NaN in shimnn where torch has a number", diff & nan_a & ~nan_b, False),
        (NUMBER_VS_NAN, "number in shimnn where torch has NaN", diff & ~nan_a & nan_b, False),
        (NAN_BITS, "NaN with other bits than torch's NaN", diff & nan_a & nan_b, True),
    ]
    for kind, label, mask, show_bits in special:
        count = int(mask.sum())
        if count:
            out.special[kind] = count
            i = int(mask.nonzero()[0])
            va, vb = _value(a[i].item(), dtype), _value(b[i].item(), dtype)
            if show_bits and ia is not None and ib is not None:
                va, vb = f"{va} ({_bits_hex(ia, i)})", f"{vb} ({_bits_hex(ib, i)})"
            out.lines.append(f"{count} {label}, first at {_index(i, shape)}: shimnn {va}, "
                             f"torch {vb}")
    numeric = diff & ~nan_a & ~nan_b & ~((a == 0) & (b == 0))
    out.numeric = int(numeric.sum())
    if out.numeric:
        da, db = a.double(), b.double()
        absdiff = torch.where(numeric, (da - db).abs(), torch.zeros_like(da))
        absdiff = torch.nan_to_num(absdiff, nan=math.inf)  # inf - inf: a difference anyway
        i = int(absdiff.argmax())
        out.max_abs = float(absdiff[i])
        out.lines.append(f"largest absolute difference {out.max_abs:.3g} at {_index(i, shape)}: "
                         f"shimnn {_value(a[i].item(), dtype)}, torch {_value(b[i].item(), dtype)}")
        rel = torch.where(numeric & (db != 0), absdiff / db.abs(), torch.zeros_like(da))
        j = int(rel.argmax())
        if float(rel[j]) > 0 and j != i:
            out.lines.append(f"largest relative difference {float(rel[j]):.3g} at "
                             f"{_index(j, shape)}: shimnn {_value(a[j].item(), dtype)}, torch "
                             f"{_value(b[j].item(), dtype)}")
        elif float(rel[j]) > 0:
            out.lines.append(f"largest relative difference {float(rel[j]):.3g} (same element)")
    return out


def assert_bitwise_equal(actual: Any, expected: Any, name: str = "tensor", *,
                         atol: float | None = None, rtol: float | None = None) -> None:
    """Raise :class:`ParityError` unless shimnn's ``actual`` equals torch's ``expected`` bit
    for bit (or within ``atol``/``rtol``; see :func:`compare_tensors`)."""
    diff = compare_tensors(actual, expected, name, atol=atol, rtol=rtol)
    if not diff.equal:
        raise ParityError(str(diff), [diff])
