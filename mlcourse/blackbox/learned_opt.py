"""A learned optimiser: the LSTM meta-learner of Ravi and Larochelle (2017), "Optimization as a
Model for Few-Shot Learning".

MAML fixes the inner update, ``θ ← θ − α ∇L``, and learns where it starts. Meta-SGD learns one
α per weight, fixed over steps. Here a small recurrent network *produces* the update. The
observation that makes it an LSTM: the gradient step has the form of an LSTM cell update,
with the weights as the cell state::

    c_t = f_t ∘ c_{t-1} + i_t ∘ (−∇_t)       c_t = θ_t,  the base network's weights
    i_t = σ(W_i [h_t, θ_{t-1}, i_{t-1}] + b_i)   a learning rate per weight and per step
    f_t = σ(W_f [h_t, θ_{t-1}, f_{t-1}] + b_f)   a forget gate: shrink the weight (f < 1) or keep it

``f = 1, i = α`` is plain SGD. The gates are computed for every weight separately by the
*same* small network (coordinate-wise, as in Andrychowicz et al., 2016), from ``h_t``, the
state of an LSTM that reads the weight's gradient and the loss (both preprocessed to
``(log|x|/p, sign x)`` so that gradients of every scale look alike), so the meta-learner has
a few hundred parameters whatever the size of the base network. The cell's initial state,
``c_0 = θ_0``, is meta-learned too: the method learns an initialisation *and* an update rule.

Meta-training unrolls ``inner_steps`` updates on the support set and backpropagates the query
loss of the final weights into the meta-learner and ``θ_0``. As in the paper, the gradients
``∇_t`` fed to the meta-learner are treated as constants (``first_order=True``): no
second derivatives, about the cost of first-order MAML; ``first_order=False`` keeps them
(the exact meta-gradient, which the tests compare with finite differences).

The base network is MAML's Conv-4 with its BatchNorm in batch mode, so the model is
transductive in the same way as MAML's (:class:`mlcourse.optim.MAML`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..data.episodes import EpisodeDataset, check_episode_request
from ..fewshot import FewShotClassifier, validate_task
from ..models import conv4_classifier
from ..optim.inner_loop import functional_forward
from ..train import History, train_loop


def preprocess(x: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """``[...] -> [..., 2]``: Andrychowicz et al.'s gradient preprocessing.

    ``(log|x| / p, sign x)`` when ``|x| >= e^-p``, else ``(-1, e^p x)``: magnitudes that span
    many orders become numbers of order one, and the sign is kept separately.
    """
    big = x.abs() >= math.exp(-p)
    log_part = torch.where(big, torch.log(x.abs().clamp_min(1e-38)) / p, torch.full_like(x, -1.0))
    sign_part = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([log_part, sign_part], dim=-1)


class MetaLearnerLSTM(FewShotClassifier):
    """Conv-4 adapted by a learned, coordinate-wise LSTM update rule.

    Args:
        n_way, in_channels, image_size, hidden: the base network (MAML's Conv-4 with an
            ``n_way`` head; ``hidden`` filters per block).
        inner_steps: updates unrolled in meta-training; ``test_inner_steps``: at prediction
            time (``None``: the same number). More steps at test time than in training is
            an extrapolation the chapter measures.
        lstm_hidden: state size of the coordinate-wise LSTM.
        lr_init: the learning rate the input gate starts at (``i = lr_init`` and ``f ≈ 1``:
            the meta-learner starts as SGD with that step).
        first_order: treat the base network's gradients as constants (the paper's choice).
        meta_batch: tasks per outer step.
    """

    method_name = "learned-opt"
    transductive = True  # BatchNorm in batch mode, as MAML's

    def __init__(self, n_way: int = 5, in_channels: int = 1, image_size: int | tuple = 28, hidden: int = 32, inner_steps: int = 5,
                 test_inner_steps: int | None = None, lstm_hidden: int = 20, lr_init: float = 0.4, first_order: bool = True,
                 meta_batch: int = 8):  # fmt: skip
        super().__init__()
        for name, value, low in (("n_way", n_way, 2), ("inner_steps", inner_steps, 1), ("lstm_hidden", lstm_hidden, 1),
                                 ("meta_batch", meta_batch, 1), ("hidden", hidden, 1)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if test_inner_steps is not None and (not isinstance(test_inner_steps, int) or test_inner_steps < 0):
            raise ValueError(f"test_inner_steps must be an int >= 0 or None, got {test_inner_steps!r}")
        if not 0 < lr_init < 1:
            raise ValueError(f"lr_init must lie in (0, 1) (it is a sigmoid gate's value), got {lr_init!r}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.n_way, self.inner_steps, self.meta_batch, self.first_order = n_way, inner_steps, meta_batch, first_order
        self.test_inner_steps = inner_steps if test_inner_steps is None else test_inner_steps
        self.net = conv4_classifier(n_way, (in_channels, h, w), hidden=hidden, out_channels=hidden, track_running_stats=False)
        self.names = [n for n, _ in self.net.named_parameters()]
        self.shapes = [p.shape for _, p in self.net.named_parameters()]
        # The meta-learner: an LSTM over (preprocessed gradient, preprocessed loss), and two gates.
        self.rnn = nn.LSTMCell(4, lstm_hidden)
        self.gate_i = nn.Linear(lstm_hidden + 2, 1)
        self.gate_f = nn.Linear(lstm_hidden + 2, 1)
        for gate, bias in ((self.gate_i, math.log(lr_init / (1 - lr_init))), (self.gate_f, 6.0)):
            nn.init.zeros_(gate.weight)  # start as SGD: i = lr_init, f = sigmoid(6) = 0.998 for every weight
            nn.init.constant_(gate.bias, bias)
        self.i0 = lr_init
        self.f0 = torch.sigmoid(torch.tensor(6.0)).item()

    # -- the update rule ------------------------------------------------------------------
    def _unflatten(self, flat: torch.Tensor) -> dict:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = flat[start : start + n].view(shape)
            start += n
        return out

    def initial_weights(self) -> torch.Tensor:
        """θ_0 as one flat vector (the cell state the LSTM starts from)."""
        return torch.cat([p.reshape(-1) for p in self.net.parameters()])

    def adapt(self, support_x, support_y, steps: int, *, keep_graph: bool, trace: list | None = None) -> dict:
        """The base network's weights after ``steps`` learned updates on the support set.

        With ``keep_graph`` the result is differentiable with respect to the meta-learner and
        θ_0 (meta-training); ``trace``, when a list, receives one dict per step with the
        gradient, the update and the gates (for the chapter's pictures).
        """
        theta = self.initial_weights()
        if not keep_graph:
            theta = theta.detach()
        second_order = keep_graph and not self.first_order
        count = theta.numel()
        state = (theta.new_zeros(count, self.rnn.hidden_size), theta.new_zeros(count, self.rnn.hidden_size))
        i_prev = theta.new_full((count, 1), self.i0)
        f_prev = theta.new_full((count, 1), self.f0)
        with torch.enable_grad():
            if not theta.requires_grad:
                theta = theta.requires_grad_()
            for _ in range(steps):
                loss = F.cross_entropy(functional_forward(self.net, self._unflatten(theta), {}, support_x), support_y)
                (grad,) = torch.autograd.grad(loss, theta, create_graph=second_order)
                if not second_order:
                    grad, loss = grad.detach(), loss.detach()
                x = torch.cat([preprocess(grad), preprocess(loss).expand(count, 2)], dim=1)
                state = self.rnn(x, state)
                column = theta.unsqueeze(1)
                i = torch.sigmoid(self.gate_i(torch.cat([state[0], column, i_prev], dim=1)))
                f = torch.sigmoid(self.gate_f(torch.cat([state[0], column, f_prev], dim=1)))
                new_theta = f.squeeze(1) * theta - i.squeeze(1) * grad
                if trace is not None:
                    trace.append({"loss": loss.item(), "grad": grad.detach().clone(), "update": (new_theta - theta).detach().clone(),
                                  "i": i.detach().squeeze(1).clone(), "f": f.detach().squeeze(1).clone()})  # fmt: skip
                theta, i_prev, f_prev = new_theta, i, f
                if not keep_graph:
                    theta, i_prev, f_prev = theta.detach().requires_grad_(), i_prev.detach(), f_prev.detach()
                    state = (state[0].detach(), state[1].detach())
        return self._unflatten(theta if keep_graph else theta.detach())

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n = validate_task(support_x, support_y, query_x)
        if n != self.n_way:
            raise ValueError(f"this MetaLearnerLSTM has a {self.n_way}-way head: support labels must cover 0..{self.n_way - 1}, "
                             f"got {n} classes (build the model with n_way={n})")  # fmt: skip
        keep_graph = torch.is_grad_enabled()
        steps = self.inner_steps if (self.training and keep_graph) else self.test_inner_steps
        adapted = self.adapt(support_x, support_y, steps, keep_graph=keep_graph)
        with torch.set_grad_enabled(keep_graph):
            return functional_forward(self.net, adapted, {}, query_x)

    # -- meta-training -------------------------------------------------------------------
    def meta_train(self, dataset, *, n_way: int | None = None, k_shot: int = 1, q_query: int = 15, steps: int = 1000,
                   lr: float = 1e-3, time_budget: float | None = None, seed: int = 0, device=None, progress=True,
                   history: History | None = None) -> History:  # fmt: skip
        """``steps`` outer steps of Adam on θ_0 and the meta-learner, each on ``meta_batch`` tasks."""
        n_way = self.n_way if n_way is None else n_way
        if n_way != self.n_way:
            raise ValueError(f"this MetaLearnerLSTM has a {self.n_way}-way head; cannot meta-train on {n_way}-way tasks")
        check_episode_request(n_way, k_shot, q_query)
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes=max(1, steps) * self.meta_batch, seed=seed)
        opt, sched = self.make_optimizer(lr, steps)

        def step(i):
            self.train()
            opt.zero_grad(set_to_none=True)
            losses, accs = [], []
            for t in range(self.meta_batch):
                ep = episodes[(i * self.meta_batch + t) % len(episodes)].to(device)
                logits = self(ep.support_x, ep.support_y, ep.query_x)
                loss = F.cross_entropy(logits, ep.query_y)
                (loss / self.meta_batch).backward()
                losses.append(loss.item())
                accs.append((logits.argmax(-1) == ep.query_y).float().mean().item())
            nn.utils.clip_grad_norm_(self.parameters(), 10.0)  # an unrolled recurrence can spike
            opt.step()
            sched.step()
            return {"loss": sum(losses) / len(losses), "acc": sum(accs) / len(accs)}

        history = train_loop(step, steps, time_budget=time_budget, history=history, desc="meta-train MetaLearnerLSTM", progress=progress)
        self.eval()
        return history
