import pytest
import torch

from mlcourse.profiling import peak_memory_bytes, peak_memory_mb, time_call

MB4 = 1000 * 1000 * 4  # a float32 [1000, 1000]


def one_at_a_time():
    a = torch.ones(1000, 1000)
    del a
    b = torch.ones(1000, 1000)
    return float(b[0, 0])


def two_at_once():
    a, b = torch.ones(1000, 1000), torch.ones(1000, 1000)
    return float(a[0, 0] + b[0, 0])


def test_peak_is_the_largest_amount_held_at_once_not_the_total_allocated():
    assert MB4 <= peak_memory_bytes(one_at_a_time) < 1.05 * MB4
    assert 2 * MB4 <= peak_memory_bytes(two_at_once) < 2.05 * MB4
    assert peak_memory_mb(two_at_once) == pytest.approx(2 * MB4 / 2**20, rel=0.05)


def test_memory_held_before_the_call_is_not_counted():
    held = torch.ones(4000, 1000)  # 16 MB, allocated before
    assert peak_memory_bytes(lambda: held.mul_(2)) < 1000  # in place: nothing new
    assert MB4 <= peak_memory_bytes(one_at_a_time) < 1.05 * MB4


def _meta_step(first_order: bool, steps: int = 5):
    from mlcourse.models import conv4_classifier
    from mlcourse.optim import meta_gradient

    torch.manual_seed(0)
    net = conv4_classifier(5, (1, 28, 28), hidden=8, track_running_stats=False)
    g = torch.Generator().manual_seed(0)
    tasks = (torch.rand(2, 5, 1, 28, 28, generator=g), torch.arange(5).repeat(2, 1),
             torch.rand(2, 25, 1, 28, 28, generator=g), torch.arange(5).repeat_interleave(5).repeat(2, 1))
    return lambda: meta_gradient(net, tasks, inner_steps=steps, inner_lr=0.4, first_order=first_order, buffers={})


def test_second_order_maml_needs_more_memory_than_first_order():
    second, first = _meta_step(False), _meta_step(True)
    second(), first()  # warm up (one-off allocations of the first call)
    peak_second, peak_first = peak_memory_bytes(second), peak_memory_bytes(first)
    assert peak_first > 0
    assert peak_second > 1.5 * peak_first, (peak_second, peak_first)
    # and each inner step adds to it: the graph of every step is kept
    one_step = _meta_step(False, steps=1)
    one_step()
    assert peak_second > 1.5 * peak_memory_bytes(one_step)


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="cpu.*cuda"):
        peak_memory_bytes(lambda: None, "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_on_cuda_counts_device_memory():
    held = torch.ones(1000, 1000, device="cuda")

    def fn():
        a = torch.ones(1000, 1000, device="cuda")
        b = torch.ones(1000, 1000, device="cuda")
        return (a + b + held).sum().item()  # a third [1000, 1000] for a + b, a fourth for + held

    peak = peak_memory_bytes(fn, "cuda")
    assert 3 * MB4 <= peak < 4.2 * MB4
    assert peak_memory_bytes(lambda: torch.ones(10), "cpu") < 1000  # the GPU's memory is not the CPU's


def test_time_call_is_positive():
    assert time_call(lambda: sum(range(100)), repeats=3) > 0
