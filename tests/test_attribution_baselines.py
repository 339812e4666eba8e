"""Baselines: CAMs vs pytorch-grad-cam, RISE hand case, SISE Otsu vs scikit-image, EP sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wysiwyc.attribution import build_method
from wysiwyc.attribution.perturbation import rise_masks
from wysiwyc.attribution.sise import SISE, otsu_threshold
from wysiwyc.models.classifiers import freeze, small_cnn
from wysiwyc.models.fused import FusedModel
from wysiwyc.spec import ModelSpec


@pytest.fixture(scope="module")
def fused() -> FusedModel:
    torch.manual_seed(0)
    clf = small_cnn(3, width=4)
    # non-trivial BatchNorm statistics so eval-mode activations are not all alike
    for m in clf.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    freeze(clf)
    spec = ModelSpec(class_names=["a", "b", "c"], image_size=(32, 32))
    return FusedModel(spec, clf).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("ours,theirs", [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"),
                                         ("scorecam", "ScoreCAM")])
def test_cams_match_pytorch_grad_cam(fused, images, ours, theirs):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = [0, 2]
    mine = build_method(ours, fused)(images, torch.tensor(classes).view(2, 1))[:, 0].numpy()
    net = nn.Sequential(fused.norm, fused.classifier).eval()
    layer = fused.classifier.blocks[fused.classifier.target_block]
    cam = getattr(pgc, theirs)(model=net, target_layers=[layer])
    if theirs == "ScoreCAM":
        cam.batch_size = 16
    ref = cam(input_tensor=images.clone().requires_grad_(True),  # our classifier is frozen
               targets=[ClassifierOutputTarget(c) for c in classes])
    for i in range(2):
        assert mine[i].max() == pytest.approx(1.0, abs=1e-3)
        assert _pearson(mine[i], ref[i]) >= 0.99


def test_cam_masks_all_classes_batched(fused, images):
    m = build_method("gradcam", fused)
    both = m(images, [0, 1])
    one = m(images, [[1], [1]])
    assert both.shape == (2, 2, 32, 32)
    assert torch.allclose(both[:, 1:], one, atol=1e-5)


def test_rise_masks_are_seeded_crops_of_the_upsampled_grid_at_random_shifts():
    a = rise_masks(5, (10, 10), cells=2, p=0.5, seed=3)
    b = rise_masks(5, (10, 10), cells=2, p=0.5, seed=3)
    assert a.shape == (5, 1, 10, 10) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    # Petsiuk et al.: the 2x2 grid upsampled to (2+1)·5 px, cropped at a shift in [0, 5) per axis
    gen = torch.Generator().manual_seed(3)
    grid = (torch.rand(5, 1, 2, 2, generator=gen) < 0.5).float()
    up = torch.nn.functional.interpolate(grid, size=(15, 15), mode="bilinear", align_corners=False)
    dy, dx = torch.randint(0, 5, (5,), generator=gen), torch.randint(0, 5, (5,), generator=gen)
    for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist())):
        assert torch.equal(a[i], up[i, :, y:y + 10, x:x + 10]), i
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 1  # the masks are shifted differently
    assert not torch.equal(a, up[:, :, :10, :10])  # and not all at the origin


class _MeanModel:
    """Stub with the FusedModel surface RISE uses: logit of class c = c-th channel mean * 10."""

    def __init__(self) -> None:
        self.classifier = None

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean((2, 3)) * 10


def test_rise_equals_hand_computation():
    from wysiwyc.attribution.perturbation import RISE

    img = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    rise = RISE(_MeanModel(), n_masks=3, cells=2, p=0.5, batch_size=2, seed=7)
    out = rise(img, [[1]])[0, 0]
    masks = rise_masks(3, (6, 6), cells=2, p=0.5, seed=7)[:, 0]
    want = torch.zeros(6, 6)
    for m in masks:  # Σ_i sigmoid(10·mean(I_c ⊙ M_i)) M_i / (N p)
        want += torch.sigmoid(10 * (img[0, 1] * m).mean()) * m
    want /= 3 * 0.5
    assert torch.allclose(out, want.clamp(0, 1), atol=1e-6)


def test_otsu_matches_skimage():
    filters = pytest.importorskip("skimage.filters")
    gen = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.rand(3, 20, 20, generator=gen) ** 3,
                      torch.cat([torch.rand(1, 10, 20, generator=gen) * 0.3,
                                 0.6 + 0.4 * torch.rand(1, 10, 20, generator=gen)], 1)])
    ours = otsu_threshold(maps)
    for i in range(maps.shape[0]):
        assert ours[i].item() == pytest.approx(filters.threshold_otsu(maps[i].numpy().astype(np.float64)), abs=1e-6)
    assert otsu_threshold(torch.full((1, 4, 4), 0.3)).item() == pytest.approx(0.3)


def test_sise_fusion_hand_case():
    a = torch.tensor([[0.0, 1.0], [0.5, 0.2]])
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # Otsu splits {0} from {1}
    out = SISE.fuse(torch.stack([a, b]))
    want = torch.tensor([[0.0, 0.0], [1.5, 1.2]])
    want = (want - want.min()) / (want.max() - want.min())
    assert torch.allclose(out, want, atol=1e-5)


def test_sise_runs_and_counts_positive_maps(fused, images):
    s = build_method("sise", fused, batch_size=32)
    out = s(images[:1], [[0]])
    assert out.shape == (1, 1, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert out.max() == pytest.approx(1.0, abs=1e-5)
    total = sum(fused.classifier.block_channels((32, 32)).values())
    assert 0 < s.last_mask_count <= total


def test_extremal_perturbation_finds_the_informative_region():
    # the logit penalises any change of the left half of the image, so only pixels there
    # (where the image differs from its blur: the square's edges) are worth preserving
    img = torch.zeros(1, 3, 16, 16)
    img[:, :, 4:12, 2:6] = 1.0

    class Stub:
        classifier = None

        def classify(self, images):
            d = ((images - img)[:, :, :, :8] ** 2).mean((1, 2, 3))
            return torch.stack([-1e4 * d, d], 1)  # strong enough to beat the area term

    from wysiwyc.attribution.perturbation import ExtremalPerturbation

    m = ExtremalPerturbation(Stub(), areas=(0.1,), iterations=150)(img, [[0]])[0, 0]
    assert m[:, :8].mean() > 2 * m[:, 8:].mean()


def test_extremal_perturbation_grid_and_reward_scale():
    from wysiwyc.attribution.perturbation import ExtremalPerturbation

    assert ExtremalPerturbation.grid(224) == (7, 1.0)  # TorchRay's own setting, untouched
    assert ExtremalPerturbation.grid(64) == (2, 12.25)
    assert ExtremalPerturbation.grid(16) == (1, 49.0)


@pytest.mark.slow
def test_extremal_perturbation_is_seeded(fused, images):
    # the tie-breaking jitter and the per-iteration shifts come from the seed alone
    run = lambda seed: build_method("extremal", fused, areas=(0.1,), iterations=20, seed=seed)(images, [[0], [1]])
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
