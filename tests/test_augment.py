"""Tests for the batched random affine augmentation."""

from __future__ import annotations

import pytest
import torch

from metaleap.tasks import base
from metaleap.tasks.augment import RandomAffine, affine_matrices, apply_affine

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU


def _asymmetric(n: int = 1, size: int = 28) -> torch.Tensor:
    """An 'L'-like ink-high image with no rotational symmetry, away from the border."""
    x = torch.zeros(n, 1, size, size)
    x[:, :, 6:22, 8:11] = 1.0
    x[:, :, 19:22, 8:20] = 0.7
    x[:, :, 6:9, 16:18] = 0.4
    return x


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Bounds: grid_sample reads each output pixel at a float32 source coordinate; at an exact pixel
# centre the coordinate's rounding (a few 1e-7 of a pixel from affine_grid's products) moves a
# bilinear sample by at most that times the largest neighbour difference (1 here): 1e-5 is
# ten times above it, and any real misplacement moves whole pixels.


def test_identity_parameters_reproduce_input() -> None:
    x = torch.rand(5, 1, 28, 28, generator=_gen(1))
    aug = RandomAffine(rotation=(0, 0), translate=0.0, scale=(1, 1))
    torch.testing.assert_close(aug(x, _gen()), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_match_rot90(k: int) -> None:
    x = _asymmetric(2)
    aug = RandomAffine(rotation=(90 * k, 90 * k), translate=0.0, scale=(1, 1))
    y = aug(x, _gen())
    expected = torch.rot90(x, k, dims=(-2, -1))
    # Content lies away from the border, so the match is exact up to float error.
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(y, x)


def test_pure_translation_shifts_pixels() -> None:
    x = _asymmetric()
    theta = affine_matrices(torch.zeros(1), torch.ones(1), torch.tensor([[0.25, -0.25]]))
    y = apply_affine(x, theta)  # 0.25 of 28 px = 7 px right, 7 px up
    expected = torch.zeros_like(x)
    expected[..., :-7, 7:] = x[..., 7:, :-7]
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_scale_enlarges_content() -> None:
    x = _asymmetric()
    theta = affine_matrices(torch.zeros(1), torch.full((1,), 1.2), torch.zeros(1, 2))
    assert apply_affine(x, theta).sum() > 1.3 * x.sum()


def test_same_generator_state_same_output() -> None:
    x = _asymmetric(8)
    aug = RandomAffine()
    a, b = aug(x, _gen(3)), aug(x, _gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(4)))


def test_each_image_gets_its_own_transform() -> None:
    x = _asymmetric(6)
    y = RandomAffine()(x, _gen(0))
    for i in range(1, 6):
        assert not torch.allclose(y[0], y[i])


def test_draws_exactly_four_uniforms_per_image() -> None:
    g = _gen(5)
    RandomAffine(rotation=(0, 0), translate=0.0, scale=(1, 1))(_asymmetric(3), g)
    ref = _gen(5)
    torch.rand(3, 4, generator=ref, dtype=torch.float64)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=ref))


@pytest.mark.parametrize("fill", [0.0, 0.5, 1.0])
def test_fill_value_at_corners(fill: float) -> None:
    x = torch.full((4, 1, 28, 28), 0.3)
    # 45° rotation, shrunk: the corners of the output come from outside the input.
    aug = RandomAffine(rotation=(45, 45), translate=0.0, scale=(0.8, 0.8), fill=fill)
    y = aug(x, _gen())
    for r, c in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        torch.testing.assert_close(y[:, :, r, c], torch.full((4, 1), fill), atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, :, 14, 14], torch.full((4, 1), 0.3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_preserved(dtype: torch.dtype) -> None:
    x = torch.rand(7, 3, 20, 24, generator=_gen(2), dtype=dtype)
    y = RandomAffine()(x, _gen())
    assert y.shape == x.shape and y.dtype == dtype
    assert RandomAffine()(x[:0], _gen()).shape == (0, 3, 20, 24)


def test_values_stay_in_range() -> None:
    x = torch.rand(16, 1, 28, 28, generator=_gen(6))
    y = RandomAffine()(x, _gen())
    assert y.min() >= 0.0 and y.max() <= 1.0 + 1e-6


def test_fits_batches() -> None:
    x = _asymmetric(30)
    task = base.Task("t", 3, x, torch.arange(30) % 3, x[:3], torch.arange(3))
    out = list(base.batches(task, 20, 4, _gen(), augment=RandomAffine()))
    assert len(out) == 4 and all(b.shape == (20, 1, 28, 28) for b, _ in out)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RandomAffine(scale=(0.0, 1.0))
    with pytest.raises(ValueError):
        RandomAffine(translate=-0.1)
    with pytest.raises(ValueError):
        RandomAffine()(torch.zeros(1, 28, 28), _gen())
