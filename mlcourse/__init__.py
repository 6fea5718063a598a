"""mlcourse: the helper library of a hands-on course on meta-learning.

The chapters in ``chapters/`` import from here; every piece is ordinary, tested code
that can be read on its own as a reference implementation.

Layout (arrows point one way: data knows nothing of methods, methods nothing of notebooks)::

    config    fast mode, device, seeding, cache folders
    data      Omniglot, the offline glyph dataset, digits, N-way K-shot episodes
    models    Conv-4 backbone and heads (torch.func.functional_call friendly)
    train     training loop with progress bars, history, atomic checkpoints
    evaluate  accuracy over many episodes with a 95% confidence interval
    baselines the honest baselines of chapter 01
    viz       image grids, episodes and learning curves
    checks    the checks that exercise notebooks call
"""

__version__ = "0.1.0"

from .config import FAST, device_info, fast_mode, get_device, pick, seed_everything  # noqa: E402,F401
