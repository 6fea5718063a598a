"""Checks for the chapter 03 exercise: query-class pairs, the relation module, its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import Check


def check_make_pairs(make_pairs) -> None:
    """``make_pairs(class_maps [N, C, h, w], query_maps [Q, C, h, w]) -> [Q, N, 2C, h, w]``,
    ``pairs[q, n] = concat(class_maps[n], query_maps[q])`` along the channels."""
    chk = Check("check_make_pairs", "make_pairs")
    g = torch.Generator().manual_seed(0)
    cm, qm = torch.randn(3, 2, 4, 4, generator=g), torch.randn(5, 2, 4, 4, generator=g)
    with chk.case("3 class maps, 5 query maps of 2x4x4"):
        out = chk.call(make_pairs, cm, qm)
        chk.expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")
        shape = tuple(out.shape)
        if shape in {(5, 4, 4, 4), (3, 4, 4, 4)}:
            chk.fail(f"got {shape}: only min(N, Q) pairs; every query must be paired with *every* class (N x Q pairs)")
        if shape in {(15, 2, 4, 4), (8, 2, 4, 4), (5, 3, 2, 8, 4), (5, 3, 2, 4, 8)}:
            chk.fail(f"got {shape}: concatenate along the channel dimension, giving 2C channels")
        chk.expect(shape == (5, 3, 4, 4, 4), f"expected shape (5, 3, 4, 4, 4) = [Q, N, 2C, h, w], got {shape}")
    with chk.case("pairs[q, n] holds class map n, then query map q"):
        for q, n in ((0, 0), (4, 1), (2, 2)):
            if torch.equal(out[q, n], torch.cat([qm[q], cm[n]])):
                chk.fail("the query map comes first: put the class map first, then the query map (the paper's order)")
            chk.expect(torch.equal(out[q, n], torch.cat([cm[n], qm[q]])),
                       f"pairs[{q}, {n}] should be torch.cat([class_maps[{n}], query_maps[{q}]]) along channels")
    chk.done()


def check_relation_module(RelationModule) -> None:
    """``RelationModule(in_channels, hidden, map_size)`` maps ``[B, in_channels, s, s]`` to
    scores ``[B]`` in ``(0, 1)`` and can be trained."""
    chk = Check("check_relation_module", "RelationModule")
    torch.manual_seed(0)
    with chk.case("build RelationModule(in_channels=128, hidden=64, map_size=5)"):
        module = chk.call(RelationModule, in_channels=128, hidden=64, map_size=5)
        chk.expect(isinstance(module, nn.Module), f"expected an nn.Module, got {type(module).__name__}")
        chk.expect(sum(p.numel() for p in module.parameters()) > 0, "the module has no parameters: build its layers in __init__")
    with chk.case("7 pairs of 128x5x5 maps give 7 scores in (0, 1)"):
        module.eval()
        with torch.no_grad():
            out = chk.call(module, torch.randn(7, 128, 5, 5) * 3)
        chk.expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")
        if tuple(out.shape) == (7, 1):
            chk.fail("got shape (7, 1): return one score per pair, shape [B] (squeeze the last dimension)")
        chk.expect(tuple(out.shape) == (7,), f"expected shape (7,), got {tuple(out.shape)}")
        chk.expect(bool(((out > 0) & (out < 1)).all()),
                   f"scores must lie in (0, 1), got min {out.min().item():.3f} max {out.max().item():.3f}: end with a sigmoid")
    with chk.case("other sizes: in_channels=16, hidden=8, map_size=7"):
        small = chk.call(RelationModule, in_channels=16, hidden=8, map_size=7)
        out = chk.call(small.eval(), torch.randn(3, 16, 7, 7))
        chk.expect(tuple(out.shape) == (3,), f"expected shape (3,), got {tuple(out.shape)}: size the first linear layer from map_size")
    with chk.case("it learns: 80 Adam steps on 'is the pair made of two equal halves?'"):
        g = torch.Generator().manual_seed(0)
        net = chk.call(RelationModule, in_channels=8, hidden=16, map_size=5)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        net.train()
        losses = []
        for _ in range(80):
            a = torch.randn(32, 4, 5, 5, generator=g)
            same = torch.rand(32, generator=g) < 0.5
            b = torch.where(same[:, None, None, None], a, torch.randn(32, 4, 5, 5, generator=g))
            score = chk.call(net, torch.cat([a, b], dim=1))
            loss = F.mse_loss(score, same.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        chk.expect(last < 0.8 * first, f"the loss went from {first:.3f} to {last:.3f}: the module barely learns")
    chk.done()


def check_relation_loss(relation_loss) -> None:
    """``relation_loss(scores [Q, N], query_y [Q]) -> scalar``: MSE against one-hot labels."""
    chk = Check("check_relation_loss", "relation_loss")
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.4, 0.8], [0.5, 0.5, 0.0], [0.1, 0.7, 0.2]])
    y = torch.tensor([0, 2, 1, 1])
    want = F.mse_loss(scores, F.one_hot(y, 3).float())
    with chk.case("4 queries, 3 classes"):
        out = chk.call(relation_loss, scores, y)
        chk.expect(torch.is_tensor(out) and out.dim() == 0, f"expected a scalar tensor, got {out!r}")
        if torch.allclose(out, F.cross_entropy(scores, y), atol=1e-5):
            chk.fail("that is the cross-entropy: Relation Networks regress the scores onto the one-hot labels (MSE)")
        if torch.allclose(out, ((scores - F.one_hot(y, 3).float()) ** 2).sum(), atol=1e-5):
            chk.fail(f"got the sum of squares ({float(out):.4f}); take the mean ({float(want):.4f})")
        chk.expect(torch.allclose(out, want, atol=1e-5), f"expected {float(want):.4f}, got {float(out):.4f}")
    chk.done()
