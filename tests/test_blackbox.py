"""The black-box family: sequence learners (LSTM, SNAIL) and the learned optimiser."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mlcourse.blackbox import (
    SNAIL,
    LSTMLearner,
    MetaLearnerLSTM,
    episode_sequence,
    label_tokens,
    preprocess,
    shuffle_episode,
    support_order_effect,
)
from mlcourse.data.episodes import Episode
from mlcourse.fewshot import FewShotClassifier


def _task(n_way=5, k_shot=1, queries=3, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(n_way * k_shot, 1, size, size, generator=g)
    sy = torch.arange(n_way).repeat_interleave(k_shot)
    qx = torch.rand(n_way * queries, 1, size, size, generator=g)
    qy = torch.arange(n_way).repeat_interleave(queries)
    return sx, sy, qx, qy


# -- the sequence ------------------------------------------------------------------------
def test_episode_sequence_layout_and_no_query_label():
    s, q = torch.randn(4, 3), torch.randn(2, 3)
    seq = episode_sequence(s, torch.tensor([1, 0, 1, 0]), q, n_way=2)
    assert seq.shape == (2, 5, 5)
    # support tokens: features then one-hot labels, in the given order, the same in every row
    assert torch.equal(seq[0, :4, :3], s) and torch.equal(seq[1, :4], seq[0, :4])
    assert torch.equal(seq[0, :4, 3:], torch.tensor([[0.0, 1], [1, 0], [0, 1], [1, 0]]))
    # the query token: its own features, and nothing where a label would be
    assert torch.equal(seq[:, 4, :3], q)
    assert torch.count_nonzero(seq[:, 4, 3:]) == 0
    assert torch.count_nonzero(label_tokens(q, None, 2)[:, 3:]) == 0


def test_episode_sequence_rejects_mismatched_features():
    with pytest.raises(ValueError, match="support features have 3 numbers and query features 4"):
        episode_sequence(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(1, 4), 2)
    with pytest.raises(ValueError, match=r"features must be \[B, D\]"):
        episode_sequence(torch.randn(2, 3, 1), torch.tensor([0, 1]), torch.randn(1, 3), 2)


@pytest.mark.parametrize("cls", [LSTMLearner, SNAIL])
def test_a_query_sees_only_the_support_set(cls):
    """The answer for one query must not depend on the other queries (no leak between queries,
    and in particular none of their labels, which the model is never given)."""
    torch.manual_seed(0)
    model = cls(hidden=8).eval()
    sx, sy, qx, _ = _task(queries=2)
    alone = model.predict(sx, sy, qx[:1])
    others = torch.cat([qx[:1], torch.rand(7, 1, 28, 28)])
    assert torch.allclose(model.predict(sx, sy, others)[:1], alone, atol=1e-6)
    # and it does depend on the support labels: the model reads them
    assert not torch.allclose(model.predict(sx, sy.roll(1), qx[:1]), alone)


def test_lstm_branching_equals_full_sequences():
    torch.manual_seed(0)
    model = LSTMLearner(hidden=8, lstm_hidden=16)
    seq = episode_sequence(torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0]), torch.randn(4, 8), 5)
    assert torch.allclose(model.read(seq), model.read_naive(seq), atol=1e-6)


def test_snail_layers_are_causal():
    """Changing step t never changes what the network computes at earlier steps."""
    torch.manual_seed(0)
    model = SNAIL(hidden=8, filters=8, keys=((8, 4), (8, 4), (8, 4)))
    x = torch.randn(2, 6, 13)
    y = x.clone()
    y[:, 4] += 1.0
    a, b = model.blocks(x), model.blocks(y)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


# -- labels remapped per episode ----------------------------------------------------------
def test_shuffle_episode_keeps_the_task_and_varies_the_labels():
    sx, sy, _, qy = _task(queries=2)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        sx2, sy2, qy2 = shuffle_episode(sx, sy, qy, 5, g)
        # the same images, each still with its class: a support image and the queries of its
        # class share the new label
        for image, label in zip(sx2, sy2):
            original = int(sy[(sx == image).flatten(1).all(1)][0])
            assert set(qy2[qy == original].tolist()) == {int(label)}
        seen.add(int(sy2[(sx2 == sx[0]).flatten(1).all(1)][0]))
    assert seen == set(range(5))  # class 0 of the sampler gets every label in turn


def test_training_feeds_relabelled_shuffled_episodes():
    torch.manual_seed(0)
    model = LSTMLearner(hidden=8, lstm_hidden=8)
    seen = []
    original = model.forward

    def spy(sx, sy, qx):
        seen.append(sy.clone())
        return original(sx, sy, qx)

    model.forward = spy
    sx, sy, qx, qy = _task(queries=2)
    episode = Episode(sx, sy, qx, qy, torch.arange(5))
    for _ in range(10):
        loss, _ = model.episode_loss(episode)
        assert torch.isfinite(loss)
    assert any(not torch.equal(s, sy) for s in seen)  # not the sampler's 0, 1, 2, 3, 4
    assert all(sorted(s.tolist()) == list(range(5)) for s in seen)


def test_support_order_effect_is_zero_for_an_order_free_model():
    from mlcourse.metric import ProtoNet

    torch.manual_seed(0)
    model = ProtoNet(hidden=8).eval()
    sx, sy, qx, qy = _task(k_shot=2, queries=2)
    episodes = [Episode(sx, sy, qx, qy, torch.arange(5))]
    out = support_order_effect(model, episodes, orders=4)
    assert out["prediction_flip_rate"] == 0 and out["accuracy_spread"] == 0
    assert out["accuracy_given_order"] == out["accuracy_random_orders"]


class _FirstSupportLabel(FewShotClassifier):
    """Answers every query with the label of the first support image: as order-bound as a
    model can be."""

    def __init__(self):
        super().__init__()

    def forward(self, sx, sy, qx):
        return F.one_hot(sy[:1].expand(len(qx)), int(sy.max()) + 1).float()


def test_support_order_effect_sees_an_order_dependent_model():
    sx, sy, qx, qy = _task(k_shot=2, queries=4)
    out = support_order_effect(_FirstSupportLabel(), [Episode(sx, sy, qx, qy, torch.arange(5))], orders=6)
    assert out["accuracy_given_order"] == pytest.approx(0.2)  # always class 0, right for a fifth
    assert out["prediction_flip_rate"] > 0.5  # (its accuracy stays a fifth in every order: no spread)


# -- the learned optimiser ----------------------------------------------------------------
def test_preprocess():
    x = torch.tensor([1.0, -1e-2, 1e-6, 0.0])
    out = preprocess(x, p=10.0)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[1], torch.tensor([torch.log(torch.tensor(1e-2)).item() / 10, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, 1e-6 * torch.exp(torch.tensor(10.0)).item()]))
    assert torch.allclose(out[3], torch.tensor([-1.0, 0.0]))


def test_learned_optimiser_starts_as_sgd():
    torch.manual_seed(0)
    model = MetaLearnerLSTM(n_way=2, image_size=16, hidden=2, inner_steps=1, lr_init=0.3).double()
    sx, sy, _, _ = _task(n_way=2, size=16)
    sx = sx.double()
    theta = dict(model.net.named_parameters())
    loss = F.cross_entropy(model.net(sx), sy)
    grads = torch.autograd.grad(loss, list(theta.values()))
    adapted = model.adapt(sx, sy, 1, keep_graph=False)
    for (name, p), g in zip(theta.items(), grads):
        assert torch.allclose(adapted[name], model.f0 * p - 0.3 * g, atol=1e-10), name


def _meta_loss(model, task, steps):
    sx, sy, qx, qy = task
    adapted = model.adapt(sx, sy, steps, keep_graph=True)
    from mlcourse.optim.inner_loop import functional_forward

    return F.cross_entropy(functional_forward(model.net, adapted, {}, qx), qy)


def _finite_difference(model, task, steps, param, index, eps=1e-6):
    with torch.no_grad():
        old = param[index].item()
        param[index] = old + eps
        up = _meta_loss(model, task, steps).item()
        param[index] = old - eps
        down = _meta_loss(model, task, steps).item()
        param[index] = old
    return (up - down) / (2 * eps)


def _tiny_model(first_order):
    torch.manual_seed(0)
    model = MetaLearnerLSTM(n_way=2, image_size=16, hidden=2, inner_steps=2, lstm_hidden=3, first_order=first_order).double()
    with torch.no_grad():  # gates that depend on their inputs, so every path carries a gradient
        for gate in (model.gate_i, model.gate_f):
            gate.weight.normal_(0, 0.5)
    sx, sy, qx, qy = _task(n_way=2, size=16, queries=2, seed=1)
    return model, (sx.double(), sy, qx.double(), qy)


@pytest.mark.parametrize("where", ["gate_i.weight", "gate_f.bias", "rnn.weight_ih", "net.head.weight", "net.backbone.encoder.0.0.weight"])
def test_learned_optimiser_meta_gradient_matches_finite_differences(where):
    """Second order: the exact gradient of the query loss after two learned updates, with
    respect to the meta-learner's weights and to θ_0."""
    model, task = _tiny_model(first_order=False)
    params = dict(model.named_parameters())
    name = where if where in params else next(n for n in params if n.startswith(where))
    param = params[name]
    loss = _meta_loss(model, task, 2)
    (grad,) = torch.autograd.grad(loss, param)
    assert grad.abs().sum() > 0, f"no meta-gradient reaches {name}"
    for index in [(0,) * param.dim(), tuple(s - 1 for s in param.shape)]:
        fd = _finite_difference(model, task, 2, param, index)
        assert grad[index].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), (name, index)


def test_first_order_meta_gradient_of_the_meta_learner_is_exact_for_one_step():
    """With one update the base gradient does not depend on the meta-learner, so dropping its
    derivative changes nothing for the meta-learner's weights."""
    model, task = _tiny_model(first_order=True)
    param = model.gate_i.weight
    (grad,) = torch.autograd.grad(_meta_loss(model, task, 1), param)
    for index in [(0, 0), (0, param.shape[1] - 1)]:
        assert grad[index].item() == pytest.approx(_finite_difference(model, task, 1, param, index), rel=1e-4, abs=1e-8)


def test_meta_training_updates_the_meta_learner():
    model, (sx, sy, qx, qy) = _tiny_model(first_order=True)
    loss = F.cross_entropy(model(sx, sy, qx), qy)
    loss.backward()
    for name in ("gate_i.weight", "gate_f.weight", "rnn.weight_ih"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_learned_updates_lower_the_support_loss():
    model, (sx, sy, _, _) = _tiny_model(first_order=True)
    trace = []
    model.adapt(sx, sy, 8, keep_graph=False, trace=trace)
    assert len(trace) == 8 and trace[-1]["loss"] < trace[0]["loss"]
    assert set(trace[0]) == {"loss", "grad", "update", "i", "f"}


# -- protocol: save/load, bad input ------------------------------------------------------
@pytest.mark.parametrize("build", [
    lambda: LSTMLearner(hidden=8, lstm_hidden=8),
    lambda: SNAIL(hidden=8, filters=8, keys=((8, 4), (8, 4), (8, 4))),
    lambda: MetaLearnerLSTM(hidden=4, inner_steps=2, test_inner_steps=3),
])  # fmt: skip
def test_save_load_roundtrip(tmp_path, build):
    torch.manual_seed(0)
    model = build().eval()
    sx, sy, qx, _ = _task(queries=2)
    path = model.save(tmp_path / "m.pt")
    loaded = FewShotClassifier.load(path)
    assert type(loaded) is type(model)
    assert torch.allclose(loaded.predict(sx, sy, qx), model.predict(sx, sy, qx), atol=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="reads 3-way episodes"):
        LSTMLearner(n_way=3, hidden=8)(*_task()[:3])
    with pytest.raises(ValueError, match="5-way head"):
        MetaLearnerLSTM(hidden=4)(*_task(n_way=3)[:3])
    with pytest.raises(ValueError, match="n_way must be an int >= 2"):
        SNAIL(n_way=1)
    with pytest.raises(ValueError, match="lr_init must lie in"):
        MetaLearnerLSTM(lr_init=1.5)
    with pytest.raises(ValueError, match="inner_steps must be an int >= 1"):
        MetaLearnerLSTM(inner_steps=0)
    with pytest.raises(ValueError, match="cannot meta-train on 3-way"):
        LSTMLearner(hidden=8).meta_train(None, n_way=3)


def test_bench_refuses_options_that_do_not_apply():
    for argv, needle in ((["snail", "--inner-steps", "3"], "--inner-steps: does not apply to snail"),
                         (["lstm-learner", "--test-inner-steps", "3"], "--test-inner-steps: does not apply to lstm-learner")):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "mlcourse.bench", *argv, "--fast"], capture_output=True, text=True)
        assert done.returncode == 2
        assert needle in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_fast_runs_a_sequence_learner():
    from mlcourse import bench

    out = bench.main(["snail", "--data", "glyphs", "--fast", "--episodes", "4", "--quiet", "--json"])
    assert out["method"] == "snail" and len(out["episode_accuracies"]) == 4 and out["transductive"] is False
