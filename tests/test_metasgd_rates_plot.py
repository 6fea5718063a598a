"""Chapter 06's picture of Meta-SGD's learned learning rates and its parameter labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mlcourse.optim import MAML, MetaSGD  # noqa: E402
from mlcourse.optim.metasgd import conv4_parameter_label, plot_learning_rates  # noqa: E402


def test_conv4_parameter_label():
    assert conv4_parameter_label("backbone.encoder.2.1.weight") == "block 3 bn weight"
    assert conv4_parameter_label("backbone.encoder.0.0.bias") == "block 1 conv bias"
    assert conv4_parameter_label("head.weight") == "head.weight"
    assert conv4_parameter_label("backbone.encoder.x.0.weight") == "backbone.encoder.x.0.weight"


def test_plot_learning_rates_draws_one_bar_per_tensor_and_one_histogram_per_layer():
    torch.manual_seed(0)
    model = MetaSGD(n_way=5, image_size=16, hidden=4, lr_init=(0.2, 0.6))
    fig = plot_learning_rates(model, initial=0.4)
    left, right = fig.axes
    n_tensors = len(list(model.net.parameters()))
    assert len(left.patches) == n_tensors  # the min..max bars
    assert [t.get_text() for t in left.get_yticklabels()][0] == "block 1 conv weight"
    assert len(right.get_legend().get_texts()) == 5  # 4 conv blocks and the head
    assert any(line.get_xdata()[0] == 0.4 for line in right.get_lines())
    plt.close(fig)


def test_plot_learning_rates_bad_input():
    with pytest.raises(ValueError, match="MetaSGD"):
        plot_learning_rates(MAML(n_way=5, image_size=16, hidden=4))
    torch.manual_seed(0)
    fig, axes = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="2 panels"):
        plot_learning_rates(MetaSGD(n_way=5, image_size=16, hidden=4), axes=axes)
    plt.close(fig)
