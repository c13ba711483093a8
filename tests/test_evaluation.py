"""The measuring instruments of every study: AUC, error rate and the held-out training curve,
each against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from metaleap.protocols.evaluation import Curve, auc, error_rate, train_task
from metaleap.tasks.base import Task, batches

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU


def test_auc_is_the_trapezoid_area_over_the_number_of_steps():
    assert auc([1.0, 0.0]) == 0.5                      # one step: the mean of the two points
    assert auc([1.0, 1.0, 0.0]) == 0.75                # (1 + 0.5) / 2 steps
    assert auc([0.2, 0.4, 0.6, 0.8]) == pytest.approx(0.5)  # (0.3 + 0.5 + 0.7) / 3
    assert auc([0.3] * 11) == pytest.approx(0.3)       # a flat curve: its value, any length
    with pytest.raises(ValueError, match="two points"):
        auc([0.5])


def identity_classifier() -> nn.Linear:
    """Two classes, logits = x: predicts the larger of the two coordinates."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    return model


def test_error_rate_counts_wrong_argmax_in_every_chunk():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [1.0, 2.0]])
    y = torch.tensor([0, 1, 1, 1, 0])  # predictions 0, 1, 0, 1, 1: rows 2 and 4 are wrong
    model = identity_classifier()
    assert error_rate(model, x, y) == 2 / 5
    assert error_rate(model, x, y, chunk=2) == 2 / 5  # chunks 2 + 2 + 1
    assert error_rate(model, x, 1 - y) == 3 / 5


def hand_point(w: Tensor, b: Tensor, x: Tensor, y: Tensor) -> tuple[float, float, Tensor, Tensor]:
    """Loss, error and the cross-entropy gradients (w, b) of a linear softmax model, by hand."""
    x = x.flatten(1).double()
    logits = x @ w.T + b
    p = logits.exp() / logits.exp().sum(1, keepdim=True)
    onehot = torch.eye(w.shape[0], dtype=torch.float64)[y]
    loss = -(p * onehot).sum(1).log().mean().item()
    error = (logits.argmax(1) != y).double().mean().item()
    dlogits = (p - onehot) / len(y)
    return loss, error, dlogits.T @ x, dlogits.sum(0)


@pytest.mark.parametrize("steps", [1, 2])
def test_train_task_records_theta_0_to_theta_k_and_the_test_error_at_theta_k(steps: int):
    """Point i < K is the batch step i trains on, at θ^i; point K one more batch, at θ^K;
    the test error is at θ^K. The model starts from ``init``, not from its own weights."""
    g = torch.Generator().manual_seed(0)
    classes, n = 3, 6
    task = Task("t", classes, torch.rand(n * classes, 1, 2, 2, generator=g),
                torch.arange(classes).repeat(n), torch.rand(12, 1, 2, 2, generator=g),
                torch.randint(0, classes, (12,), generator=g))
    w = torch.randn(classes, 4, generator=g, dtype=torch.float64)
    b = torch.randn(classes, generator=g, dtype=torch.float64)
    init = {"1.weight": w.float(), "1.bias": b.float()}
    lr, batch_size = 0.5, 5

    def make_model() -> nn.Module:  # weights unlike init's, so loading init must matter
        return nn.Sequential(nn.Flatten(), nn.Linear(4, classes))

    curve = train_task(make_model, init, task, steps, lr, batch_size,
                       torch.Generator().manual_seed(7), None)

    losses, errors, moves = [], [], []
    stream = batches(task, batch_size, steps + 1, torch.Generator().manual_seed(7))
    w, b = w.float().double(), b.float().double()
    for i, (x, y) in enumerate(stream):
        loss, error, gw, gb = hand_point(w, b, x, y)
        losses.append(loss)
        errors.append(error)
        if i < steps:
            new_w, new_b = w - lr * gw, b - lr * gb
            moves.append(torch.cat([(new_w - w).flatten(), new_b - b]).norm().item())
            w, b = new_w, new_b
    test_logits = task.test_x.flatten(1).double() @ w.T + b
    test_error = (test_logits.argmax(1) != task.test_y).double().mean().item()

    assert len(curve.train_loss) == len(curve.train_error) == steps + 1
    # float32 training of a linear softmax model against this float64 replay: no max-pool or
    # BatchNorm to amplify rounding, sums of at most a few hundred terms (≤ 1e-5 relative at
    # worst, 2⁻²⁴·√n typically), over a few smooth SGD steps: rel 1e-5 bounds it, while a
    # wrong step or curve entry is off by O(1).
    assert curve.train_loss == pytest.approx(losses, rel=1e-5)
    assert curve.train_error == pytest.approx(errors, abs=1e-7)  # float32 means
    assert curve.test_error == test_error
    assert curve.error_auc == pytest.approx(auc(errors), abs=1e-7)
    assert curve.loss_auc == pytest.approx(auc(losses), rel=1e-5)
    assert curve.step_norms == pytest.approx(moves, rel=1e-5)
    assert curve.path_length == pytest.approx(
        sum(math.hypot(d, f1 - f0) for d, f0, f1 in zip(moves, losses[:-1], losses[1:],
                                                         strict=True)), rel=1e-5)


def test_path_length_is_the_length_of_the_parameter_and_loss_path():
    """Σ_i ‖(θ^{i+1} − θ^i, f^{i+1} − f^i)‖: a 3-4-5 step, then a step in θ alone."""
    curve = Curve(train_error=[1.0, 1.0, 1.0], train_loss=[1.0, 5.0, 5.0], test_error=1.0,
                  step_norms=[3.0, 2.0])
    assert curve.path_length == 7.0
    with pytest.raises(ValueError, match="1 steps for 3 points"):
        _ = Curve([1.0] * 3, [1.0] * 3, 1.0, step_norms=[1.0]).path_length
