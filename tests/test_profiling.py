import torch

from mlcourse.profiling import saved_for_backward, time_call


def test_saved_bytes_of_a_known_graph():
    w = torch.randn(100, 50, requires_grad=True)
    x = torch.randn(8, 100)
    with saved_for_backward() as saved:
        y = (x @ w).relu().sum()  # matmul saves x (w's gradient needs it); relu saves its output
    assert saved.bytes == (8 * 100 + 8 * 50) * 4 and saved.tensors == 2
    y.backward()
    assert w.grad is not None


def test_second_order_graph_is_bigger():
    w = torch.randn(20, 20, requires_grad=True)
    x = torch.randn(16, 20)

    def meta_loss(create_graph):
        inner = (x @ w).tanh().pow(2).mean()
        (g,) = torch.autograd.grad(inner, w, create_graph=create_graph)
        return (x @ (w - 0.1 * g)).tanh().pow(2).mean()

    with saved_for_backward() as first:
        meta_loss(False)
    with saved_for_backward() as second:
        meta_loss(True)
    assert second.bytes > first.bytes


def test_time_call_is_positive():
    assert time_call(lambda: sum(range(100)), repeats=3) > 0
