"""The second oracle for the CNN families: central finite differences in float64 (see
test_gradcheck.py for the tolerance's reasoning), on inputs away from max-pool ties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import shimnn
import shimnn.functional as F
from test_gradcheck import check


def _p(*shape: int, seed: int = 0) -> shimnn.Parameter:
    g = torch.Generator().manual_seed(seed)
    return shimnn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))


def _weighted(out: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        weights = torch.linspace(-1.0, 1.3, out.numel(), dtype=torch.float64).view(out.shape)
    return (out * weights).sum()


CASES: list[tuple[str, Callable[[], list[shimnn.Parameter]],
                  Callable[..., torch.Tensor]]] = [
    ("conv2d", lambda: [_p(2, 3, 5, 5), _p(4, 3, 3, 3, seed=1), _p(4, seed=2)],
     lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1)),
    ("conv2d same groups", lambda: [_p(1, 4, 4, 5), _p(4, 2, 2, 3, seed=1)],
     lambda x, w: F.conv2d(x, w, padding="same", groups=2)),
    ("conv_transpose2d", lambda: [_p(1, 2, 3, 3), _p(2, 3, 3, 3, seed=1), _p(3, seed=2)],
     lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, output_padding=1)),
    ("conv1d", lambda: [_p(2, 2, 6), _p(3, 2, 3, seed=1)], lambda x, w: F.conv1d(x, w)),
    ("max_pool2d", lambda: [_p(1, 2, 5, 5)], lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("avg_pool2d", lambda: [_p(1, 2, 5, 5)],
     lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    ("adaptive_avg_pool2d", lambda: [_p(1, 2, 5, 7)], lambda x: F.adaptive_avg_pool2d(x, 3)),
    ("adaptive_max_pool1d", lambda: [_p(2, 2, 7)], lambda x: F.adaptive_max_pool1d(x, 3)),
    ("batch_norm", lambda: [_p(4, 3, 2, 2), _p(3, seed=1), _p(3, seed=2)],
     lambda x, w, b: F.batch_norm(x, None, None, w, b, True)),
    ("instance_norm", lambda: [_p(2, 3, 5), _p(3, seed=1), _p(3, seed=2)],
     lambda x, w, b: F.instance_norm(x, weight=w, bias=b)),
    ("group_norm", lambda: [_p(2, 4, 3), _p(4, seed=1), _p(4, seed=2)],
     lambda x, w, b: F.group_norm(x, 2, w, b)),
    ("layer_norm", lambda: [_p(3, 2, 4), _p(2, 4, seed=1), _p(2, 4, seed=2)],
     lambda x, w, b: F.layer_norm(x, (2, 4), w, b)),
    ("rms_norm", lambda: [_p(3, 5), _p(5, seed=1)], lambda x, w: F.rms_norm(x, (5,), w) + x),
    ("pad circular", lambda: [_p(1, 1, 2, 3)], lambda x: F.pad(x, (2, 3, 2, 1), "circular")),
    ("pad reflect", lambda: [_p(1, 2, 4)], lambda x: F.pad(x, (2, 3), "reflect")),
    ("interpolate bilinear", lambda: [_p(1, 2, 3, 4)],
     lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear")),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_finite_differences(case: tuple[str, Callable[[], list[shimnn.Parameter]],
                                        Callable[..., torch.Tensor]]) -> None:
    _, make, f = case
    params = make()
    check(lambda: _weighted(f(*params)), params)  # type: ignore[arg-type]
