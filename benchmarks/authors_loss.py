"""The authors' own PyTorch loss, loaded unmodified from a file the user gives.

Their repository (Alibaba-MIIL/PartialLabelingCSL) is not part of this one
and cannot be vendored. To compare with their code, get their file and
point the benchmarks at it:

    git clone https://github.com/Alibaba-MIIL/PartialLabelingCSL
    python benchmarks/loss_speed.py \
        --authors_loss=PartialLabelingCSL/src/loss_functions/partial_asymmetric_loss.py

The file is executed as it is, and `PartialSelectiveLoss(args)` is built
with an `argparse.Namespace` of their `train.py` argument names. Two
things in it assume a CUDA device, `torch.device('cuda')` (the selection
weights) and `.cuda()` (the prior tensor, rebuilt from a dict on every
call). Where CUDA is not available, the module's global name `torch` is
pointed, after loading, at a copy of the torch module whose
`device('cuda')` returns the CPU device and whose `tensor(...)` returns a
tensor whose `.cuda()` returns it unchanged (as a plain tensor); every
other call is torch's own. The file's text is not changed.

Their `__init__` reads the prior with pandas from a CSV and keeps it as a
dict `{class name: prior}` (`self.prior_classes`); the benchmarks hand
over that dict directly, so pandas is not needed. If pandas is not
installed, an empty stand-in module answers the file's own
`import pandas` statement (the module's builtins get an `__import__` that
returns it; nothing else sees it, and pandas is used nowhere else).
"""

import argparse
import builtins
import hashlib
import importlib.util
import pathlib
import types

# Relative tolerance of the value and gradient checks (float32 sums).
TOLERANCE = 1e-4

# Our argument names -> theirs (train.py's argparse names).
_THEIR_NAMES = dict(
    mode="partial_loss_mode",
    gamma_pos="gamma_pos",
    gamma_neg="gamma_neg",
    gamma_unannotated="gamma_unann",
    alpha_pos="alpha_pos",
    alpha_neg="alpha_neg",
    alpha_unannotated="alpha_unann",
    clip="clip",
    likelihood_topk="likelihood_topk",
    prior_threshold="prior_threshold",
)


def load_module(path):
    """Executes the file at `path` as a module and returns it.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it has no `PartialSelectiveLoss`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Invalid value for --authors_loss. Expected the authors' "
            f"partial_asymmetric_loss.py. Received: {str(path)!r} (no such file)"
        )
    name = "authors_partial_asymmetric_loss"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if importlib.util.find_spec("pandas") is None:
        # Only the file's own `import pandas` statements see the stand-in.
        module.__dict__["__builtins__"] = _builtins_with_empty_pandas()
    spec.loader.exec_module(module)
    if not hasattr(module, "PartialSelectiveLoss"):
        raise ValueError(
            f"Invalid value for --authors_loss. Expected a file defining "
            f"PartialSelectiveLoss. Received: {str(path)!r}"
        )
    import torch

    if not torch.cuda.is_available():
        module.torch = _cuda_means_cpu()
    return module


def file_digest(path):
    """SHA-256 of the file, to say in the output which file was timed."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def make_criterion(module, prior=None, **settings):
    """`PartialSelectiveLoss(args)` for our settings, with `prior` handed over.

    Args:
        module: from `load_module`.
        prior: `None` or a sequence of floats, one per class.
        **settings: `ClassAwareSelectiveLoss` settings under our names
            (`likelihood_scope` must be `"batch"`, `from_logits` True).

    Returns:
        Their `nn.Module`; `criterion(logits, targets)` is the summed loss.
    """
    settings = dict(settings)
    if settings.pop("likelihood_scope", "batch") != "batch":
        raise ValueError("The authors' code has only likelihood_scope='batch'.")
    if not settings.pop("from_logits", True):
        raise ValueError("The authors' code takes logits (from_logits=True).")
    defaults = dict(
        mode="selective", gamma_pos=0.0, gamma_neg=1.0, gamma_unannotated=2.0,
        alpha_pos=1.0, alpha_neg=1.0, alpha_unannotated=1.0, clip=0.0,
        likelihood_topk=5, prior_threshold=0.05,
    )  # Their train.py defaults, with the selective mode.
    unknown = set(settings) - set(defaults)
    if unknown:
        raise ValueError(f"Not an argument of the authors' loss: {sorted(unknown)}")
    defaults.update(settings)
    args = argparse.Namespace(
        prior_path=None, **{_THEIR_NAMES[k]: v for k, v in defaults.items()}
    )
    criterion = module.PartialSelectiveLoss(args)
    if prior is not None:
        # What their __init__ builds from a prior CSV (class name -> prior).
        criterion.prior_classes = {
            f"class_{i}": float(v) for i, v in enumerate(prior)
        }
    return criterion


def _builtins_with_empty_pandas():
    """Builtins whose `__import__` answers `pandas` with an empty module."""
    stand_in = types.ModuleType("pandas (not installed: empty stand-in)")

    def import_(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] == "pandas":
            return stand_in
        return builtins.__import__(name, globals, locals, fromlist, level)

    return dict(vars(builtins), __import__=import_)


def _cuda_means_cpu():
    """A copy of the torch module where CUDA placement means the CPU."""
    import torch

    class CudaMeansCpu(torch.Tensor):
        def cuda(self, *args, **kwargs):
            del args, kwargs
            return self.as_subclass(torch.Tensor)

    def device(kind, *args, **kwargs):
        if str(kind).startswith("cuda"):
            return torch.device("cpu")
        return torch.device(kind, *args, **kwargs)

    def tensor(*args, **kwargs):
        return torch.tensor(*args, **kwargs).as_subclass(CudaMeansCpu)

    shim = types.ModuleType("torch")
    shim.__dict__.update(torch.__dict__)
    shim.device = device
    shim.tensor = tensor
    return shim


class AuthorsLoss:
    """The authors' loss on the benchmark's inputs, checked against ours.

    Args:
        path: their `partial_asymmetric_loss.py`.
        torch_threads: PyTorch's threads (0: its default).
    """

    def __init__(self, path, torch_threads=0):
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.module = load_module(path)
        self.torch = torch

    def step(self, targets, logits, prior):
        """`(run, x)`: `run()` is one forward and backward at default settings."""
        torch = self.torch
        criterion = make_criterion(self.module, prior)
        x = torch.from_numpy(logits).requires_grad_(True)
        t = torch.from_numpy(targets)

        def run():
            x.grad = None
            value = criterion(x, t)
            value.backward()
            return value

        return run, x

    def check(self, targets, logits, prior, ours_value, ours_grad):
        """Raises if their summed loss or gradient differs from ours."""
        import numpy as np

        run, x = self.step(targets, logits, prior)
        value = float(run().item())
        grad = x.grad.numpy()
        value_error = abs(value - ours_value) / max(abs(value), 1e-30)
        grad_error = float(
            np.linalg.norm(grad - ours_grad) / max(np.linalg.norm(grad), 1e-30)
        )
        if value_error > TOLERANCE or grad_error > TOLERANCE:
            raise ValueError(
                f"Our loss and the authors' differ at {targets.shape}: relative "
                f"error of the value {value_error:.1e}, of the gradient "
                f"{grad_error:.1e} (limit {TOLERANCE:.0e})"
            )
        return dict(value_error=value_error, grad_error=grad_error)


def our_sum_and_gradient(targets, logits, prior):
    """Our summed loss and its gradient, eagerly (NumPy), for the check."""
    import keras
    import numpy as np

    import keras_csl

    loss = keras_csl.ClassAwareSelectiveLoss(prior=prior, reduction="sum")
    if keras.backend.backend() == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda x: loss(targets, x))(logits)
        return float(value), np.asarray(grad)
    import tensorflow as tf

    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(targets, x)
    return float(value), tape.gradient(value, x).numpy()
