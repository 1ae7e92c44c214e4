"""The experiment's model and training step in PyTorch: the reference of the parity test.

Usage::

    python -m benchmarks.torch_reference --golden tests/data/torch_parity.npz

A PyTorch port of the Gumbel-Softmax VAE tutorial (YongfeiYan/Gumbel_Softmax_VAE) with the
project's fixes, i.e. the computation of ``python -m experiments.mnist --hard``: raw encoder logits
(no ReLU on them), Bernoulli likelihood from the decoder's logits, analytic KL to the uniform
prior, straight-through Gumbel-Softmax, Adam. It needs ``torch`` (the optional extra ``torch``);
neither the library nor the experiment imports this module.

``--golden`` writes the parity test's golden file (``tests/test_torch_parity.py``, which needs no
PyTorch): a reduced model (784-32-16-(4x5)), its weights, a batch of uint8 images, the Gumbel noise
and the 16-bit uniforms of the dynamic binarization, and what PyTorch computes from them: for each
case the loss, the posterior and pixel logits and the gradient of every parameter, and for one
training step (Adam included) the loss and the updated weights.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The golden file's model and batch: small enough for a file of well under 1 MB.
GOLDEN_HIDDEN = (32, 16)
GOLDEN_LATENTS, GOLDEN_CATEGORIES = 4, 5
GOLDEN_BATCH = 8
GOLDEN_TEMPERATURE = 0.7
# The estimators this PyTorch reference implements (by the registry's names), each a Gumbel-Softmax
# with or without the straight-through hard sample; the training step and compare_torch use ST.
HARD = {"st": True, "relaxed": False}
TRAINING_ESTIMATOR = "st"
# (name, estimator, binarize) of the gradient cases; the training-step case is "st" at step 0.
GOLDEN_CASES = (
    ("st", "st", "dynamic"),
    ("relaxed", "relaxed", "dynamic"),
    ("st_grey", "st", "none"),
)


class CategoricalVAE(nn.Module):
    """The tutorial's VAE, with raw encoder logits and Bernoulli logits out of the decoder.

    Layer names mirror ``experiments.mnist.models.DiscreteVAE`` (``nnx.Linear`` kernels are
    ``[in, out]``, ``nn.Linear`` weights ``[out, in]``).
    """

    def __init__(
        self,
        *,
        latents: int = 30,
        categories: int = 10,
        hidden: Sequence[int] = (512, 256),
        data_dim: int = 784,
    ):
        super().__init__()
        self.latents, self.categories = latents, categories
        widths = (data_dim, *hidden)
        self.encoder_hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.encoder_logits = nn.Linear(hidden[-1], latents * categories)
        widths = (latents * categories, *reversed(hidden))
        self.decoder_hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.decoder_logits = nn.Linear(hidden[0], data_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.encoder_hidden:
            h = F.relu(layer(h))
        return self.encoder_logits(h).view(x.shape[0], self.latents, self.categories)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = z.reshape(z.shape[0], self.latents * self.categories)
        for layer in self.decoder_hidden:
            h = F.relu(layer(h))
        return self.decoder_logits(h)

    def forward(
        self, x: torch.Tensor, temperature: float, *, hard: bool, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.encode(x)
        z = gumbel_softmax(logits, temperature, hard=hard, noise=noise)
        return self.decode(z), logits


def gumbel_softmax(
    logits: torch.Tensor, temperature: float, *, hard: bool, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax((logits + G) / temperature)``; with ``hard``, the tutorial's straight-through.

    ``noise`` is ``G``; ``None`` draws it as ``-log(E)``, ``E ~ Exp(1)`` (as
    ``torch.nn.functional.gumbel_softmax`` does: no ``eps``, never infinite).
    """
    if noise is None:
        noise = -torch.empty_like(logits).exponential_().log()
    perturbed = logits + noise
    soft = F.softmax(perturbed / temperature, dim=-1)
    if not hard:
        return soft
    index = perturbed.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return (one_hot - soft).detach() + soft


def negative_elbo(
    pixel_logits: torch.Tensor, x: torch.Tensor, posterior_logits: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of ``-log p(x|z) + KL(q(z|x) || uniform)``, in nats."""
    nll = F.binary_cross_entropy_with_logits(pixel_logits, x, reduction="none").sum(-1)
    log_q = F.log_softmax(posterior_logits, dim=-1)
    kl = (log_q.exp() * log_q).sum(-1) + math.log(posterior_logits.shape[-1])
    return (nll + kl.sum(-1)).mean()


def binarize_with_uniforms(levels: torch.Tensor, uniform16: torch.Tensor) -> torch.Tensor:
    """The experiment's dynamic binarization given its 16-bit uniforms: ``u < round(l 65536/255)``.

    Args:
      levels: uint8 grey levels ``[batch, data_dim]``.
      uniform16: the uniform integers in ``[0, 65536)``, ``[batch, data_dim]``.
    """
    thresholds = (levels.to(torch.int64) * 65536 + 127) // 255
    return (uniform16.to(torch.int64) < thresholds).to(torch.float32)


def temperature_at(step: int, *, initial=1.0, minimum=0.5, rate=3e-5, every=100) -> float:
    """The annealed temperature ``max(minimum, initial exp(-rate t))``, ``t`` rounded down."""
    return max(minimum, initial * math.exp(-rate * (step // every * every)))


def _targets(images: np.ndarray, uniform16: np.ndarray, binarize: str) -> torch.Tensor:
    levels = torch.from_numpy(images.reshape(len(images), -1))
    if binarize == "dynamic":
        return binarize_with_uniforms(levels, torch.from_numpy(uniform16.astype(np.int32)))
    return levels.to(torch.float32) / 255.0


def _parameters(model: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{n}": p.detach().numpy().copy() for n, p in model.named_parameters()}


def _gradients(model: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{n}": p.grad.numpy().copy() for n, p in model.named_parameters()}


def golden(seed: int = 0) -> dict[str, np.ndarray]:
    """The parity test's arrays (see the module docstring), all float32 but the uint inputs."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CategoricalVAE(
        latents=GOLDEN_LATENTS, categories=GOLDEN_CATEGORIES, hidden=GOLDEN_HIDDEN
    )
    # Weights of a trained-like scale with non-zero biases, so that every gradient is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.1, p.shape).astype(np.float32)))
    images = rng.integers(0, 256, (GOLDEN_BATCH, 28, 28), dtype=np.uint8)
    images[:, :4] = 0  # some black and white pixels, as in MNIST
    images[:, -4:] = 255
    latent_shape = (GOLDEN_BATCH, GOLDEN_LATENTS, GOLDEN_CATEGORIES)
    noise = -np.log(rng.exponential(size=latent_shape)).astype(np.float32)
    uniform16 = rng.integers(0, 65536, (GOLDEN_BATCH, 784), dtype=np.uint16)
    out = {
        "hidden": np.asarray(GOLDEN_HIDDEN, np.int32),
        "latents": np.int32(GOLDEN_LATENTS),
        "categories": np.int32(GOLDEN_CATEGORIES),
        "temperature": np.float32(GOLDEN_TEMPERATURE),
        "images": images,
        "noise": noise,
        "uniform16": uniform16,
        **_parameters(model, "params"),
    }
    for name, estimator, binarize in GOLDEN_CASES:
        model.zero_grad()
        x = _targets(images, uniform16, binarize)
        pixel_logits, posterior_logits = model(
            x, GOLDEN_TEMPERATURE, hard=HARD[estimator], noise=torch.from_numpy(noise)
        )
        loss = negative_elbo(pixel_logits, x, posterior_logits)
        loss.backward()
        out[f"{name}/loss"] = np.float32(loss.item())
        out[f"{name}/posterior_logits"] = posterior_logits.detach().numpy()
        out[f"{name}/pixel_logits"] = pixel_logits.detach().numpy()
        out.update(_gradients(model, f"{name}/grads"))
    # One training step as the experiment's first: temperature schedule(0), ST, Adam 1e-3.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.zero_grad()
    x = _targets(images, uniform16, "dynamic")
    pixel_logits, posterior_logits = model(
        x, temperature_at(0), hard=HARD[TRAINING_ESTIMATOR], noise=torch.from_numpy(noise)
    )
    loss = negative_elbo(pixel_logits, x, posterior_logits)
    loss.backward()
    optimizer.step()
    out["train_step/loss"] = np.float32(loss.item())
    out.update(_parameters(model, "train_step/params"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.torch_reference", description=__doc__
    )
    parser.add_argument("--golden", required=True, help="where to write the golden .npz")
    args = parser.parse_args(argv)
    arrays = golden()
    path = Path(args.golden)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, torch {torch.__version__})")


if __name__ == "__main__":
    main()
