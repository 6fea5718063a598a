"""Optimisation-based meta-learning: learn an initialisation that adapts in a few gradient steps.

Read in this order::

    inner_loop  the functional inner loop over any nn.Module (functional_call, second and
                first order, BatchNorm buffers kept out of harm's way)
    maml        MAML, first-order MAML, ANIL; meta_gradient with a task loop or vmap
    metasgd     Meta-SGD: a learned learning rate for every weight
    reptile     Reptile: train on the task, move the initialisation towards the result
"""

from .inner_loop import adapt, adapt_func, fresh_buffers, functional_forward, has_tied_weights, module_buffers, named_params, sgd_update
from .maml import FOMAML, MAML, MetaGradient, meta_gradient, resolve_vectorize
from .metasgd import MetaSGD, learning_rate_summary
from .protomaml import ProtoMAML, prototype_head
from .reptile import Reptile, inner_train, reptile_update

__all__ = [
    "adapt", "adapt_func", "fresh_buffers", "functional_forward", "has_tied_weights", "module_buffers", "named_params", "sgd_update",
    "MAML", "FOMAML", "MetaGradient", "meta_gradient", "resolve_vectorize",
    "MetaSGD", "learning_rate_summary", "ProtoMAML", "prototype_head",
    "Reptile", "inner_train", "reptile_update",
]  # fmt: skip
