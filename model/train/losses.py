"""The losses of LaMa's training step, as the official ``DefaultInpaintingTrainingModule`` computes
them for Big LaMa (``configs/training/big-lama.yaml``).

Generator step: masked L1 on the known pixels, the non-saturating adversarial loss, feature
matching on the discriminator's activations and the high-receptive-field perceptual loss
(:class:`~lama_model.train.perceptual.ResNetPL`). Discriminator step: non-saturating loss with an
R1 penalty on real images, and the hole of the mask as the fake target (the known part of a
generated image counts as real). Names of the logged values are the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lama_model.train.perceptual import ResNetPL


@dataclass
class LossWeights:
    """Big LaMa's loss weights (``configs/training/losses/*`` as big-lama sets them)."""

    l1_known: float = 10.0
    l1_missing: float = 0.0
    adversarial: float = 10.0
    r1_gamma: float = 0.001  # the official gp_coef
    feature_matching: float = 100.0
    resnet_pl: float = 30.0


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    weight_known: float, weight_missing: float,
) -> torch.Tensor:  # fmt: skip
    """Mean of ``|pred − target|`` weighted per pixel: ``weight_missing`` in the hole (mask 1),
    ``weight_known`` elsewhere. The mean runs over every element, hole or not."""
    weights = mask * weight_missing + (1 - mask) * weight_known
    return (weights * (pred - target).abs()).mean()


def feature_matching_loss(
    fake_features: list[torch.Tensor], real_features: list[torch.Tensor]
) -> torch.Tensor:
    """Mean over layers of the MSE between the discriminator's activations (unmasked)."""
    return torch.stack(
        [F.mse_loss(f, r) for f, r in zip(fake_features, real_features, strict=True)]
    ).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``‖∂(Σ logits)/∂x_b‖²`` (R1), differentiable into the discriminator."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) ** 2).mean()


class NonSaturatingWithR1:
    """Non-saturating GAN loss with R1 on reals and the mask as the fake target.

    Big LaMa's settings: ``weight`` 10 (applied to the generator's term only, as the official
    code does), ``gp_coef`` 0.001, ``mask_as_fake_target``, the mask brought to the
    discriminator's resolution with "nearest" interpolation.
    """

    def __init__(self, weight: float = 10.0, gp_coef: float = 0.001) -> None:
        self.weight = weight
        self.gp_coef = gp_coef

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake_logits).mean() * self.weight

    def discriminator_loss(
        self, real_images: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """``mean(softplus(−r) + gp + m_d·softplus(f) + (1 − m_d)·softplus(−f))``.

        ``real_images`` must require grad and be the tensor ``real_logits`` was computed from.
        """
        gp = r1_penalty(real_logits, real_images) * self.gp_coef
        mask = F.interpolate(mask, size=fake_logits.shape[-2:], mode="nearest")
        real_term = F.softplus(-real_logits)
        fake_term = mask * F.softplus(fake_logits) + (1 - mask) * F.softplus(-fake_logits)
        total = (real_term + gp + fake_term).mean()
        logs = {
            "adv_discr_real_out": real_logits.mean(),
            "adv_discr_fake_out": fake_logits.mean(),
            "adv_discr_real_gp": gp,
        }
        return total, logs


def predict(generator: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The generator's output for ``image`` with holes where ``mask`` is 1 (official input
    layout: the masked image and the mask as a fourth channel)."""
    return generator(torch.cat([image * (1 - mask), mask], dim=1))


def generator_losses(
    image: torch.Tensor,
    mask: torch.Tensor,
    predicted: torch.Tensor,
    discriminator: nn.Module,
    resnet_pl: ResNetPL | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator step's objective: ``gen_l1 + gen_adv + gen_fm + gen_resnet_pl``.

    Gradients reach ``predicted`` through the discriminator; the caller keeps the
    discriminator's parameters out of the generator's optimiser (or freezes them). The real
    images go through the discriminator first (feature-matching targets), as officially.
    ``resnet_pl=None`` or ``weights.resnet_pl == 0`` leaves the perceptual term out (no
    ``gen_resnet_pl`` entry); likewise ``gen_fm`` when its weight is 0.
    """
    logs: dict[str, torch.Tensor] = {}
    total = logs["gen_l1"] = masked_l1(predicted, image, mask, weights.l1_known, weights.l1_missing)
    # The official order: D(real) first, then D(fake); separate calls, separate batch statistics.
    _, real_features = discriminator(image)
    fake_logits, fake_features = discriminator(predicted)
    adversarial = NonSaturatingWithR1(weights.adversarial, weights.r1_gamma)
    logs["gen_adv"] = adversarial.generator_loss(fake_logits)
    total = total + logs["gen_adv"]
    if weights.feature_matching > 0:
        fm = feature_matching_loss(fake_features, real_features) * weights.feature_matching
        logs["gen_fm"] = fm
        total = total + fm
    if resnet_pl is not None and weights.resnet_pl > 0:
        # weights.resnet_pl rules here (ResNetPL.weight is for calling the module on its own).
        perceptual = torch.stack(resnet_pl.layer_losses(predicted, image)).sum()
        logs["gen_resnet_pl"] = perceptual * weights.resnet_pl
        total = total + logs["gen_resnet_pl"]
    return total, logs


def discriminator_losses(
    image: torch.Tensor,
    mask: torch.Tensor,
    predicted: torch.Tensor,
    discriminator: nn.Module,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The discriminator step's objective ``discr_adv`` (R1 included) and its logged parts.

    ``predicted`` is detached here; the real batch is copied into a leaf that requires grad for
    the R1 penalty, so ``image`` itself is left untouched.
    """
    real = image.detach().requires_grad_(True)
    real_logits, _ = discriminator(real)
    fake_logits, _ = discriminator(predicted.detach())
    adversarial = NonSaturatingWithR1(weights.adversarial, weights.r1_gamma)
    total, logs = adversarial.discriminator_loss(real, real_logits, fake_logits, mask)
    return total, {"discr_adv": total, **logs}
