"""Checks for the chapter 02 exercises: prototypes, distance logits, the episode loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Check


def _reference_prototypes(z, y, n):
    return torch.stack([z[y == j].mean(0) for j in range(n)])


def _reference_logits(zq, c):
    return -((zq[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def check_prototypes(prototypes) -> None:
    """``prototypes(embeddings [S, D], labels [S], n_way) -> [N, D]`` class means."""
    chk = Check("check_prototypes", "prototypes")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, generator=g)
    with chk.case("3 classes, 2 shots, support ordered class by class"):
        y = torch.tensor([0, 0, 1, 1, 2, 2])
        out = chk.call(prototypes, z, y, 3)
        chk.expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")
        if tuple(out.shape) == (6,):
            chk.fail("got shape (6,): you averaged each embedding over its features (dim 1); average the embeddings of each class over dim 0")
        if tuple(out.shape) == (4,):
            chk.fail("got shape (4,): you averaged all embeddings together; average per class")
        chk.expect(tuple(out.shape) == (3, 4), f"expected shape (3, 4) = [N, D], got {tuple(out.shape)}")
        want = _reference_prototypes(z, y, 3)
        chk.expect(torch.allclose(out, want, atol=1e-5), f"expected class means\n{want}\n    got\n{out}")
    with chk.case("labels in any order (support not sorted by class)"):
        y = torch.tensor([2, 0, 1, 0, 2, 1])
        out = chk.call(prototypes, z, y, 3)
        want = _reference_prototypes(z, y, 3)
        if torch.allclose(out, _reference_prototypes(z, torch.tensor([0, 0, 1, 1, 2, 2]), 3), atol=1e-5):
            chk.fail("your prototypes ignore the labels and assume the support is ordered class by class "
                     "(e.g. a reshape to [N, K, D]); select each class's embeddings with `labels == j`")
        chk.expect(torch.allclose(out, want, atol=1e-5), f"expected\n{want}\n    got\n{out}")
    with chk.case("classes with different numbers of shots (1 and 3)"):
        y = torch.tensor([0, 1, 1, 1])
        out = chk.call(prototypes, z[:4], y, 2)
        want = _reference_prototypes(z[:4], y, 2)
        chk.expect(torch.allclose(out, want, atol=1e-5), f"expected\n{want}\n    got\n{out}")
    with chk.case("gradients flow back to the embeddings"):
        zz = z.clone().requires_grad_(True)
        out = chk.call(prototypes, zz, torch.tensor([0, 0, 1, 1, 2, 2]), 3)
        chk.expect(out.requires_grad, "the prototypes are detached from the embeddings: no .detach(), .item() or numpy inside")
    chk.done()


def check_proto_logits(proto_logits) -> None:
    """``proto_logits(query_embeddings [Q, D], prototypes [N, D]) -> [Q, N]``: minus squared distances."""
    chk = Check("check_proto_logits", "proto_logits")
    g = torch.Generator().manual_seed(1)
    zq, c = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g)
    want = _reference_logits(zq, c)
    with chk.case("5 queries, 4 prototypes"):
        out = chk.call(proto_logits, zq, c)
        chk.expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")
        if tuple(out.shape) == (4, 5):
            chk.fail("got shape (4, 5) = [N, Q]: return one row per query, [Q, N]")
        chk.expect(tuple(out.shape) == (5, 4), f"expected shape (5, 4) = [Q, N], got {tuple(out.shape)}")
        if torch.allclose(out, -want, atol=1e-4):
            chk.fail("your logits are +distance: the nearest prototype must get the *largest* logit, so use minus the squared distance")
        dist = (-want).sqrt()
        if torch.allclose(out, -dist, atol=1e-4) or torch.allclose(out, dist, atol=1e-4):
            chk.fail("you used the Euclidean distance, not its square. ProtoNet's argument (mean = best prototype) "
                     "needs a Bregman divergence: ||a - b||^2")
        chk.expect(torch.allclose(out, want, atol=1e-4), f"expected\n{want}\n    got\n{out}")
    with chk.case("a query that sits on a prototype gets logit 0 for that class"):
        out = chk.call(proto_logits, c[2:3], c)
        chk.expect(abs(float(out[0, 2])) < 1e-5 and int(out.argmax()) == 2, f"expected logit 0 for class 2 and the max there, got {out.tolist()}")
    chk.done()


def check_episode_loss(episode_loss) -> None:
    """``episode_loss(embed, support_x, support_y, query_x, query_y) -> scalar``: the mean
    cross-entropy of the query predictions, with prototypes from the support set only."""
    chk = Check("check_episode_loss", "episode_loss")
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(16, 8, generator=g)

    def embed(x):
        return x.flatten(1) @ weight

    sx = torch.randn(6, 1, 4, 4, generator=g)
    sy = torch.tensor([0, 0, 1, 1, 2, 2])
    qx = torch.randn(9, 1, 4, 4, generator=g)
    qy = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0])
    zs, zq = embed(sx), embed(qx)
    logits = _reference_logits(zq, _reference_prototypes(zs, sy, 3))
    want = F.cross_entropy(logits, qy)
    with chk.case("a 3-way 2-shot episode with 9 queries"):
        out = chk.call(episode_loss, embed, sx, sy, qx, qy)
        chk.expect(torch.is_tensor(out) and out.dim() == 0, f"expected a scalar tensor (0-dim), got {out!r}")
        leaky = F.cross_entropy(_reference_logits(zq, _reference_prototypes(torch.cat([zs, zq]), torch.cat([sy, qy]), 3)), qy)
        if torch.allclose(out, leaky, atol=1e-4):
            chk.fail("your prototypes include the query images (with their labels): that leaks the answers into the "
                     "prediction. Prototypes come from the support set only.")
        if torch.allclose(out, F.cross_entropy(logits, qy, reduction="sum"), atol=1e-3):
            chk.fail(f"got the *sum* over queries ({float(out):.4f}); use the mean ({float(want):.4f}) so the loss does not grow with Q")
        if torch.allclose(out, F.cross_entropy(-logits, qy), atol=1e-4):
            chk.fail("the loss uses +distance as logits: minus the squared distance is the logit")
        chk.expect(torch.allclose(out, want, atol=1e-4), f"expected {float(want):.4f}, got {float(out):.4f}")
    with chk.case("the loss depends on the query labels, and only through the cross-entropy"):
        shuffled = qy[torch.tensor([3, 4, 5, 6, 7, 8, 0, 1, 2])]
        out2 = chk.call(episode_loss, embed, sx, sy, qx, shuffled)
        want2 = F.cross_entropy(logits, shuffled)
        chk.expect(torch.allclose(out2, want2, atol=1e-4), f"with other query labels expected {float(want2):.4f}, got {float(out2):.4f}")
    chk.done()
