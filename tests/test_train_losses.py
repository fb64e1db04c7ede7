"""One official LaMa training step (fixtures/lama-train/losses) reproduced with our modules.

Fixed batch, the tiny generator, the Big LaMa discriminator (``bigd``) and a small one
(``tinyd``), and the ResNetPL encoder, all in train mode as Lightning runs them. Tolerances are
the fixture README's: loss values rtol 1e-5 (float32); generator gradients rel-L2 < 1e-6 in
float64 and < 0.15 in float32 (train-mode BatchNorm on a batch of 2 makes float32 gradients
land on different ReLU pieces); discriminator gradients rel-L2 < 1e-3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lama_model.train.discriminator import NLayerDiscriminator
from lama_model.train.losses import (
    LossWeights,
    discriminator_losses,
    generator_losses,
    masked_l1,
    predict,
)
from lama_model.train.perceptual import (
    RESNET_PL_KEYS,
    DilatedResNet50,
    ResNetPL,
    ResNetPLError,
    load_resnet_pl_encoder,
)
from lama_model.weights.checkpoint import load_model

VARIANTS = ("bigd", "tinyd")
GEN_COMPONENTS = ("gen_l1", "gen_adv", "gen_fm", "gen_resnet_pl")
DISCR_LOGS = ("discr_adv", "adv_discr_real_out", "adv_discr_fake_out", "adv_discr_real_gp")


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _grads(loss: torch.Tensor, net: torch.nn.Module, names) -> dict[str, np.ndarray]:
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in names], retain_graph=True)
    return {n: g.detach().numpy() for n, g in zip(names, grads, strict=True)}


class Step:
    """The fixed batch and networks of the fixture, in one dtype, everything in train mode."""

    def __init__(self, fixtures, tiny_model_dir, recipe_discriminator, recipe_resnet50, dtype):
        batch = np.load(fixtures / "batch.npz")
        # Inputs are made in float32 (what ToFloat gives) and then upcast, as the fixture did.
        self.image = (torch.from_numpy(batch["image_uint8"]).float() / 255).to(dtype)
        self.mask = torch.from_numpy(batch["mask_uint8"]).float().to(dtype)
        self.generator = load_model(tiny_model_dir).generator.to(dtype).train()
        self.discriminators = {v: recipe_discriminator(v).to(dtype).train() for v in VARIANTS}
        self.resnet_pl = ResNetPL(30.0, recipe_resnet50()).to(dtype).train()
        self.predicted = predict(self.generator, self.image, self.mask)
        self.weights = LossWeights()


@pytest.fixture(scope="module")
def fixtures(train_fixtures_dir):
    return train_fixtures_dir / "losses"


@pytest.fixture(scope="module")
def step32(fixtures, tiny_model_dir, recipe_discriminator, recipe_resnet50):
    torch.manual_seed(0)
    return Step(fixtures, tiny_model_dir, recipe_discriminator, recipe_resnet50, torch.float32)


@pytest.fixture(scope="module")
def step64(fixtures, tiny_model_dir, recipe_discriminator, recipe_resnet50):
    return Step(fixtures, tiny_model_dir, recipe_discriminator, recipe_resnet50, torch.float64)


@pytest.fixture(scope="module")
def generator_step32(step32):
    """Our generator step in float32, per variant: (total, logs). ResNetPL runs once (bigd); for
    tinyd its term (identical: it does not involve the discriminator) is added to the total."""
    out = {}
    for variant in VARIANTS:
        pl = step32.resnet_pl if variant == "bigd" else None
        out[variant] = generator_losses(step32.image, step32.mask, step32.predicted,
                                        step32.discriminators[variant], pl, step32.weights)  # fmt: skip
    total, logs = out["tinyd"]
    resnet_pl = out["bigd"][1]["gen_resnet_pl"]
    out["tinyd"] = (total + resnet_pl, {**logs, "gen_resnet_pl": resnet_pl})
    return out


@pytest.fixture(scope="module")
def generator_grads64(step64, fixtures):
    """Our float64 generator-step gradients of each component w.r.t. the fixture's tensors."""
    names = list(np.load(fixtures / "bigd" / "gen_grad_total_f64.npz").keys())
    gen = step64.generator
    out: dict[str, dict] = {"values": {}}
    pl_total, pl_logs = generator_losses(step64.image, step64.mask, step64.predicted,
                                         step64.discriminators["bigd"], step64.resnet_pl,
                                         LossWeights(l1_known=0, adversarial=0, feature_matching=0))  # fmt: skip
    out["gen_resnet_pl"] = _grads(pl_logs["gen_resnet_pl"], gen, names)
    out["values"]["gen_resnet_pl"] = pl_logs["gen_resnet_pl"].item()
    for variant in VARIANTS:
        total, logs = generator_losses(step64.image, step64.mask, step64.predicted,
                                       step64.discriminators[variant], None, step64.weights)  # fmt: skip
        grads = {k: _grads(logs[k], gen, names) for k in ("gen_l1", "gen_adv", "gen_fm")}
        total_grad = _grads(total, gen, names)
        grads["total"] = {n: total_grad[n] + out["gen_resnet_pl"][n] for n in names}
        out[variant] = grads
        out["values"][variant] = {k: v.item() for k, v in logs.items()}
        out["values"][variant]["total"] = total.item() + out["values"]["gen_resnet_pl"]
    return out


def _official(fixtures, variant, dtype="float32"):
    return json.loads((fixtures / variant / "values.json").read_text())[dtype]


def test_discriminator_and_encoder_have_the_official_key_layout(fixtures, recipe_discriminator):
    for variant in VARIANTS:
        manifest = json.loads((fixtures / variant / "manifest-discriminator.json").read_text())
        net = recipe_discriminator(variant)
        assert isinstance(net, NLayerDiscriminator)
        expected = [(e["key"], e["shape"]) for e in manifest["entries"]]
        assert [(k, list(v.shape)) for k, v in net.state_dict().items()] == expected
    manifest = json.loads((fixtures / "manifest-resnet50dilated.json").read_text())
    assert list(RESNET_PL_KEYS) == [e["key"] for e in manifest["entries"]]
    assert len(RESNET_PL_KEYS) == 330
    assert sum(p.numel() for p in DilatedResNet50().parameters()) == 23_631_808


def test_predicted_image_is_the_official_one(step32, fixtures):
    official = np.load(fixtures / "predicted_image.npy")
    np.testing.assert_allclose(step32.predicted.detach().numpy(), official, rtol=0, atol=5e-5)


def test_masked_l1_counts_every_pixel_in_the_mean():
    pred, target = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert masked_l1(pred, target, mask, 10, 0).item() == pytest.approx(10 * 3 / 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generator_loss_values_match_the_official_step(generator_step32, fixtures, variant):
    total, logs = generator_step32[variant]
    official = _official(fixtures, variant)
    for name in GEN_COMPONENTS:
        expected = official["generator_step"][f"train_{name}"]
        assert logs[name].item() == pytest.approx(expected, rel=1e-5), name
    assert total.item() == pytest.approx(official["generator_total"], rel=1e-5)
    fm_layers = official["decomposition"]["fm_per_layer_mse"]
    assert logs["gen_fm"].item() == pytest.approx(100 * np.mean(fm_layers), rel=1e-5)


def test_resnet_pl_in_eval_mode_gives_the_fixture_diagnostic_value(
    step32, fixtures, recipe_resnet50
):
    """LaMa trains with the encoder in train mode (the value tests above); eval mode, with the
    recipe's running statistics, gives the fixture's NOT-official diagnostic value instead."""
    official = _official(fixtures, "bigd")["decomposition"]
    with torch.no_grad():
        resnet_pl = ResNetPL(30.0, recipe_resnet50()).eval()
        eval_value = resnet_pl(step32.predicted.detach(), step32.image).item()
    expected = official["resnet_pl_if_encoder_in_eval_mode_NOT_OFFICIAL"]
    assert eval_value == pytest.approx(expected, rel=1e-4)
    assert not any(p.requires_grad for p in resnet_pl.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_discriminator_loss_values_and_gradients_match(step32, fixtures, variant):
    net = step32.discriminators[variant]
    total, logs = discriminator_losses(step32.image, step32.mask, step32.predicted, net,
                                       step32.weights)  # fmt: skip
    official = _official(fixtures, variant)["discriminator_step"]
    for name in DISCR_LOGS:
        assert logs[name].item() == pytest.approx(official[f"train_{name}"], rel=1e-5), name
    assert total is logs["discr_adv"]
    grads = _grads(total, net, ["model0.0.weight", "model0.0.bias"])
    for dtype in ("f32", "f64"):
        reference = np.load(fixtures / variant / f"discr_grad_total_{dtype}.npz")
        for name, value in reference.items():
            assert _rel_l2(grads[name], value) < 1e-3, (dtype, name)
    assert step32.image.grad is None and not step32.image.requires_grad


# float32 round-off of the discriminator's logits (values up to ±5, std ~0.9): our float32 run
# against our float64 run differs by up to 2.5e-5, and so does the official float32 fixture;
# which summation order a CPU's instruction set (AVX2, AVX-512, AMX) picks moves them within
# that. The bound is twice it, far below a real error (a wrong layer, padding or slope moves
# logits by ~0.1). The fake logits also carry the predicted image's own float32 error (atol 5e-5
# in test_predicted_image_is_the_official_one).
LOGITS_RTOL, LOGITS_ATOL = 1e-5, 5e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_discriminator_outputs_are_the_official_logits(step32, fixtures, variant):
    with torch.no_grad():
        real, _ = step32.discriminators[variant](step32.image)
        fake, _ = step32.discriminators[variant](step32.predicted)
    np.testing.assert_allclose(real.numpy(), np.load(fixtures / variant / "discr_real_pred.npy"),
                               rtol=LOGITS_RTOL, atol=LOGITS_ATOL)  # fmt: skip
    np.testing.assert_allclose(fake.numpy(), np.load(fixtures / variant / "discr_fake_pred.npy"),
                               rtol=LOGITS_RTOL, atol=LOGITS_ATOL)  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_total_generator_gradients_match_loosely(
    step32, generator_step32, fixtures, variant
):
    reference = np.load(fixtures / variant / "gen_grad_total_f32.npz")
    ours = _grads(generator_step32[variant][0], step32.generator, list(reference.keys()))
    for name, value in reference.items():
        assert _rel_l2(ours[name], value) < 0.15, name


def test_float64_component_gradients_match_sharply(generator_grads64, fixtures):
    for component, key in (
        ("gen_grad_l1_f64", "gen_l1"),
        ("gen_grad_resnet_pl_f64", "gen_resnet_pl"),
    ):
        reference = np.load(fixtures / f"{component}.npz")
        ours = generator_grads64[key] if key == "gen_resnet_pl" else generator_grads64["bigd"][key]
        for name, value in reference.items():
            assert _rel_l2(ours[name], value) < 1e-6, (component, name)
    for variant in VARIANTS:
        for key, file in (("gen_adv", "gen_grad_adv_f64"), ("gen_fm", "gen_grad_fm_f64"),
                          ("total", "gen_grad_total_f64")):  # fmt: skip
            reference = np.load(fixtures / variant / f"{file}.npz")
            for name, value in reference.items():
                assert _rel_l2(generator_grads64[variant][key][name], value) < 1e-6, (
                    variant,
                    key,
                    name,
                )


def test_float64_loss_values_match_the_official_float64_step(generator_grads64, fixtures):
    values = generator_grads64["values"]
    for variant in VARIANTS:
        official = _official(fixtures, variant, "float64")
        for name in ("gen_l1", "gen_adv", "gen_fm"):
            expected = official["generator_step"][f"train_{name}"]
            assert values[variant][name] == pytest.approx(expected, rel=1e-9), (variant, name)
        assert values[variant]["total"] == pytest.approx(official["generator_total"], rel=1e-9)
    official_pl = _official(fixtures, "bigd", "float64")["generator_step"]["train_gen_resnet_pl"]
    assert values["gen_resnet_pl"] == pytest.approx(official_pl, rel=1e-9)


def test_float64_discriminator_gradients_match_sharply(step64, fixtures):
    for variant in VARIANTS:
        net = step64.discriminators[variant]
        total, _ = discriminator_losses(step64.image, step64.mask, step64.predicted, net,
                                        step64.weights)  # fmt: skip
        reference = np.load(fixtures / variant / "discr_grad_total_f64.npz")
        ours = _grads(total, net, list(reference.keys()))
        for name, value in reference.items():
            assert _rel_l2(ours[name], value) < 1e-6, (variant, name)
        official = _official(fixtures, variant, "float64")["discriminator_total"]
        assert total.item() == pytest.approx(official, rel=1e-9)


def test_generator_losses_without_resnet_pl_or_fm_leave_those_terms_out(step32):
    weights = LossWeights(feature_matching=0)
    total, logs = generator_losses(step32.image, step32.mask, step32.predicted.detach(),
                                   step32.discriminators["tinyd"], None, weights)  # fmt: skip
    assert set(logs) == {"gen_l1", "gen_adv"}
    assert total.item() == pytest.approx(logs["gen_l1"].item() + logs["gen_adv"].item(), rel=1e-6)


# ---- loading the encoder weights file


def test_encoder_file_loads_with_official_or_prefixed_keys(tmp_path, recipe_resnet50):
    state = recipe_resnet50().state_dict()
    official = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    official["fc.weight"] = torch.zeros(2, 2)  # extra entries are ignored, as officially
    torch.save(official, tmp_path / "encoder_epoch_20.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "prefixed.pth")
    for name in ("encoder_epoch_20.pth", "prefixed.pth"):
        loaded = load_resnet_pl_encoder(tmp_path / name).state_dict()
        assert torch.equal(loaded["layer4.2.bn3.running_var"], state["layer4.2.bn3.running_var"])
        assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])


def test_encoder_file_problems_are_one_line_errors(tmp_path, recipe_resnet50):
    with pytest.raises(ResNetPLError, match="no such file"):
        load_resnet_pl_encoder(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ResNetPLError, match="not a readable PyTorch weights file"):
        load_resnet_pl_encoder(tmp_path / "junk.pth")
    state = recipe_resnet50().state_dict()
    del state["layer2.0.conv1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ResNetPLError, match="1 weights missing.*layer2.0.conv1.weight"):
        load_resnet_pl_encoder(tmp_path / "partial.pth")
    state = recipe_resnet50().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(ResNetPLError, match=r"conv1.weight has shape \(64, 3, 7, 7\)"):
        load_resnet_pl_encoder(tmp_path / "wrong.pth")


@pytest.mark.parametrize("weight_missing", [0.0, 2.0])
def test_l1_missing_weight_changes_the_loss_in_the_hole_only(weight_missing):
    """--l1-missing-weight W: a change inside the hole costs W per unit, outside it 10 as ever."""
    target = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # top half is the hole
    base = masked_l1(target, target, mask, 10, weight_missing).item()
    in_hole, outside = target.clone(), target.clone()
    in_hole[..., 0, 0] = 1
    outside[..., 3, 3] = 1
    elements = target.numel()
    assert masked_l1(in_hole, target, mask, 10, weight_missing).item() - base == pytest.approx(
        3 * weight_missing / elements)
    assert masked_l1(outside, target, mask, 10, weight_missing).item() - base == pytest.approx(
        3 * 10 / elements)
