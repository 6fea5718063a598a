import pytest
import torch
from torch.func import functional_call

from mlcourse.models import Conv4, conv4_classifier, count_parameters


def test_conv4_shapes():
    net = Conv4()
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 64)
    assert net.feature_dim((1, 28, 28)) == 64
    assert Conv4(in_channels=3).feature_dim((3, 84, 84)) == 64 * 5 * 5
    assert Conv4(in_channels=3)(torch.rand(2, 3, 84, 84)).shape == (2, 1600)
    # 4 blocks of (3x3 conv + BN affine): the count the papers quote (about 113k)
    assert count_parameters(net) == (9 * 1 * 64 + 64 + 128) + 3 * (9 * 64 * 64 + 64 + 128)


def test_conv4_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\], got \(28, 28\)"):
        Conv4()(torch.rand(28, 28))
    with pytest.raises(ValueError, match="too small"):
        Conv4().feature_dim((1, 8, 8))


def test_functional_call_substitutes_parameters():
    torch.manual_seed(0)
    model = conv4_classifier(5).eval()
    x = torch.rand(4, 1, 28, 28)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert torch.allclose(functional_call(model, params, (x,)), model(x))
    params["head.bias"] = params["head.bias"] + 1.0
    assert torch.allclose(functional_call(model, params, (x,)), model(x) + 1.0, atol=1e-6)


def test_untracked_batchnorm_keeps_no_running_statistics():
    net = Conv4(track_running_stats=False)
    assert not any("running" in name for name, _ in net.named_buffers())
