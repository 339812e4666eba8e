"""The explanandum: any classifier, the project's zoo or the user's own, behind one interface.

A user's classifier keeps its weights, its own top (pooling + linear layers) and class
count; :class:`HookedClassifier` gives it the interface the attribution methods read
(``forward``, ``forward_features``, ``features_and_logits``, ``block_names``,
``target_block``) by forward hooks on its modules. Its ``ModelSpec.classifier_arch`` names
the route it was built by:

========================  =========================================================
``torchvision:NAME``      ``torchvision.models.NAME(weights=None, num_classes=C)``
``timm:NAME``             ``timm.create_model(NAME, pretrained=False, num_classes=C)``
                          (the ``timm`` extra)
``factory:PKG.MOD:FN``    any ``nn.Module`` from a Python factory ``FN()`` — the route
                          for in-house models (the module must import where it runs)
``torchscript``           a TorchScript file; its bytes travel in the checkpoint, and
                          it is a black box (no feature blocks: Explainer only)
(a zoo name)              :data:`~.classifiers.CLASSIFIERS` (``small_cnn``, ...)
========================  =========================================================

Feature blocks are found without user work (:func:`find_blocks`): one dry run with a
forward hook on every module, keeping, for each spatial stride, the module that finished
last with an output of that resolution (global pooling, size 1, is not a block). They can
be named instead (``blocks``). ReciproCAM reads the deepest block; Grad-CAM-style methods,
SISE and the mask predictor read them all.

Which checkpoint keys hold the weights: a zoo classifier's own state dict; a user model's
state dict under its own keys (``model.state_dict()``); a TorchScript model's file under
:data:`TORCHSCRIPT_KEY` as a uint8 tensor (so ``torch.load(weights_only=True)`` still loads it).
"""

from __future__ import annotations

import importlib
import io
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError, require
from ..registry import Registry
from ..spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, read_class_names
from .classifiers import Normalize, build_classifier, load_state

TORCHSCRIPT_KEY = "__torchscript__"

# route prefix -> builder(name, num_classes) -> the untrained user model
ROUTES: Registry[Callable[[str, int | None], nn.Module]] = Registry("classifier route")


@ROUTES.register("torchvision")
def _torchvision(name: str, num_classes: int | None) -> nn.Module:
    import torchvision.models as tvm

    if name not in tvm.list_models(module=tvm):
        raise UserError(f"torchvision has no classification model {name!r} (see torchvision.models.list_models())")
    kw = {} if num_classes is None else {"num_classes": num_classes}
    return tvm.get_model(name, weights=None, **kw)


@ROUTES.register("timm")
def _timm(name: str, num_classes: int | None) -> nn.Module:
    timm = require("timm", "timm", "timm classifiers")
    if not timm.is_model(name):
        raise UserError(f"timm has no model {name!r} (see timm.list_models())")
    kw = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=False, **kw)


@ROUTES.register("factory")
def _factory(target: str, num_classes: int | None) -> nn.Module:  # noqa: ARG001 - the factory decides
    module_name, _, fn_name = target.partition(":")
    if not module_name or not fn_name:
        raise UserError(f"factory {target!r}: write it as package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the user's module raises while importing
        raise UserError(f"factory {target}: cannot import {module_name} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"factory {target}: {module_name} has no function {fn_name}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise UserError(f"factory {target} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def split_arch(arch: str) -> tuple[str, str]:
    """``torchvision:resnet18`` -> (``torchvision``, ``resnet18``); a zoo name -> (``zoo``, name)."""
    if arch == "torchscript":
        return "torchscript", ""
    route, sep, name = arch.partition(":")
    return (route, name) if sep else ("zoo", arch)


def is_foreign(arch: str) -> bool:
    """Whether ``arch`` is a user model route rather than a zoo name."""
    return split_arch(arch)[0] != "zoo"


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], arch: str, source: str = "the weights") -> None:
    """``model.load_state_dict(state)``, strict; a file for another model is one line.

    Raises:
        UserError: missing, unexpected or mis-shaped tensors (the first few are named).
    """
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    shapes = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                 for what, v in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
        raise UserError(f"{source} do not fit {arch}: {'; '.join(parts)} — weights for another model?")
    model.load_state_dict(state)


def torchscript_from_bytes(data: torch.Tensor | bytes) -> nn.Module:
    raw = bytes(data.numpy().tobytes()) if isinstance(data, torch.Tensor) else data
    with warnings.catch_warnings():
        # torch marks TorchScript deprecated; the user's file is what it is, so say nothing
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(io.BytesIO(raw), map_location="cpu")


def load_torchscript(path: str | Path) -> tuple[nn.Module, torch.Tensor]:
    """A TorchScript file: (the module, its bytes as a uint8 tensor for the checkpoint)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"TorchScript file not found: {p}")
    raw = p.read_bytes()
    try:
        model = torchscript_from_bytes(raw)
    except Exception as exc:
        raise UserError(f"{p} is not a TorchScript file ({type(exc).__name__})") from exc
    return model, torch.frombuffer(bytearray(raw), dtype=torch.uint8)


class HookedClassifier(nn.Module):
    """A user's classifier, unchanged, with feature blocks read by forward hooks.

    ``forward(x (B,3,H,W) normalised) -> logits (B,C)``; ``forward_features`` and
    ``features_and_logits`` add the block outputs name -> (B,C_k,H_k,W_k), shallow to deep.

    Args:
        model: the user's module (its own top included).
        blocks: module names (``model.named_modules()``) whose outputs are the feature
            blocks, shallow to deep; empty for a black box (TorchScript).
        arch: the spec's ``classifier_arch``.
    """

    def __init__(self, model: nn.Module, blocks: list[str], arch: str) -> None:
        super().__init__()
        self.model = model
        self.arch = arch
        modules = dict(model.named_modules()) if blocks else {}
        unknown = [b for b in blocks if b not in modules]
        if unknown:
            raise UserError(f"{arch} has no module {unknown[0]!r} to read features from")
        self._block_names = list(blocks)
        self.target_block = self._block_names[-1] if blocks else None
        self.torchscript: torch.Tensor | None = None  # a TorchScript model's file, for its checkpoint

    @property
    def block_names(self) -> list[str]:
        return list(self._block_names)

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(x), self.arch)

    @contextmanager
    def capture(self) -> Iterator["OrderedDict[str, torch.Tensor]"]:
        """Within the block, every forward stores the block outputs (shallow to deep) in the
        yielded dict."""
        if not self._block_names:
            raise UserError(f"{self.arch} is a black box (no feature blocks): only the Explainer, which needs "
                            "the classifier's outputs alone, can explain it")
        feats: OrderedDict[str, torch.Tensor] = OrderedDict((n, None) for n in self._block_names)  # type: ignore[misc]

        def keep(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
                feats[name] = out
            return hook

        handles = [self.module(n).register_forward_hook(keep(n)) for n in self._block_names]
        try:
            yield feats
        finally:
            for h in handles:
                h.remove()

    def features_and_logits(self, x: torch.Tensor) -> tuple["OrderedDict[str, torch.Tensor]", torch.Tensor]:
        with self.capture() as feats:
            logits = self(x)
        return feats, logits

    def forward_features(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.features_and_logits(x)[0]

    def block_channels(self, image_size: tuple[int, int] = (224, 224)) -> dict[str, int]:
        """Output channels of each block, found by a dry run at ``image_size``."""
        with torch.no_grad():
            p = next(self.parameters())
            feats = self.forward_features(torch.zeros(1, 3, *image_size, device=p.device, dtype=p.dtype))
        return {k: int(v.shape[1]) for k, v in feats.items()}


def _logits(out: Any, arch: str) -> torch.Tensor:
    """The model's output as logits (B,C); a model that returns anything else is refused."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # e.g. (logits, aux) of models with auxiliary outputs
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{arch} returns {shape}, not logits (B, C): wysiwyc explains image classifiers")
    return out


def find_blocks(model: nn.Module, image_size: tuple[int, int]) -> list[tuple[str, int, int]]:
    """The feature blocks of ``model`` from one dry run at ``image_size``: for each spatial
    stride, the module that finished last with a 4-D output of that resolution.

    Returns:
        [(module name, channels, stride)], shallow to deep; ``[]`` when no module outputs a
        feature map, or when the network goes on to tokens after its last one (a vision
        transformer, whose patch embedding is a convolution), or for a TorchScript model.
    """
    order: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, mod in model.named_modules():
        if not name or isinstance(mod, torch.jit.ScriptModule):
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim in (3, 4):
                order.append((name, tuple(out.shape)))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            p = next(model.parameters(), None)
            x = torch.zeros(1, 3, *image_size, device=p.device if p is not None else "cpu",
                            dtype=p.dtype if p is not None else torch.float32)
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    maps = [i for i, (_, shape) in enumerate(order) if len(shape) == 4]
    if not maps or any(len(shape) == 3 for _, shape in order[maps[-1] + 1:]):
        return []
    last: dict[int, tuple[str, int]] = {}
    for name, shape in (order[i] for i in maps):
        h = shape[2]
        if h > 1 and image_size[0] % h == 0:
            last[image_size[0] // h] = (name, shape[1])
    return [(name, c, stride) for stride, (name, c) in sorted(last.items())]


def build_user_model(arch: str, num_classes: int | None = None, state: dict[str, torch.Tensor] | None = None
                     ) -> nn.Module:
    """The user's model of a route (:func:`split_arch`), with ``state`` loaded when given.

    Raises:
        UserError: an unknown route or name, a factory that does not import, weights for
            another model.
    """
    route, name = split_arch(arch)
    if route == "torchscript":
        if state is None or TORCHSCRIPT_KEY not in state:
            raise UserError("a TorchScript classifier needs its file (wrap it with train/wrap_classifier.py)")
        try:
            return torchscript_from_bytes(state[TORCHSCRIPT_KEY]).eval()
        except Exception as exc:  # torch.jit.load raises RuntimeError and friends for a foreign archive
            raise UserError(f"the checkpoint's TorchScript classifier is not a loadable TorchScript file "
                            f"({type(exc).__name__})") from exc
    model = ROUTES.lookup(route)(name, num_classes)
    if state is not None:
        load_weights(model, state, arch)
    return model.eval()


def classifier_from_spec(spec: ModelSpec, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The classifier a spec describes, zoo or user model, with ``state`` (a checkpoint's
    ``classifier``) loaded when given. A user model's blocks are ``spec.extra["blocks"]``.

    Raises:
        UserError: an unknown arch, a factory that does not import, weights that do not fit.
    """
    arch = spec.classifier_arch
    if not is_foreign(arch):
        model = build_classifier(arch, spec.num_classes)
        if state is not None:
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise UserError(f"classifier weights do not fit {arch} with {spec.num_classes} classes: "
                                f"{str(exc).splitlines()[0]}") from exc
        return model
    user = build_user_model(arch, spec.num_classes if split_arch(arch)[0] != "factory" else None, state)
    clf = HookedClassifier(user, list(spec.extra.get("blocks", [])), arch)
    if state is not None and TORCHSCRIPT_KEY in state:
        clf.torchscript = state[TORCHSCRIPT_KEY]
    return clf


def classifier_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint stores for the classifier ``model`` (see the module doc)."""
    raw = getattr(model, "torchscript", None)
    if raw is not None:
        return {TORCHSCRIPT_KEY: raw}
    inner = model.model if isinstance(model, HookedClassifier) else model
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def user_model(model: str, weights: str | None, num_classes: int | None) -> tuple[str, nn.Module, torch.Tensor | None]:
    """The user's model as named on the command line: ``torchvision:NAME``, ``timm:NAME``,
    ``package.module:function`` or a TorchScript file. Returns (arch, model with ``weights``
    loaded, the TorchScript bytes or ``None``)."""
    route, _, name = model.partition(":")
    if not name and Path(model).suffix in (".pt", ".pth", ".ts", ".torchscript", ".jit"):
        if weights:
            raise UserError("a TorchScript file holds its weights: leave out --weights")
        module, raw = load_torchscript(model)
        return "torchscript", module.eval(), raw
    if not name:
        raise UserError(f"{model!r}: give torchvision:NAME, timm:NAME, package.module:function or a TorchScript file")
    arch = model if route in ROUTES else f"factory:{model}"
    net = build_user_model(arch, num_classes if not arch.startswith("factory:") else None)
    if weights:
        load_weights(net, load_state(weights), arch, f"weights file {weights}")
    return arch, net.eval(), None


def wrap_classifier(model: str, classes: str, activation: str, weights: str | None = None,
                    image_size: tuple[int, int] = (224, 224), mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD, bgr: bool = False,
                    blocks: list[str] | None = None) -> tuple[ModelSpec, dict[str, torch.Tensor], HookedClassifier]:
    """Bring a user's classifier in: its spec (preprocessing, activation, class names,
    feature blocks), what a checkpoint stores for it, and the wrapped model.

    Raises:
        UserError: anything a user can get wrong — see :func:`user_model`, a class-name
            count that is not the model's output width, an output that is not (B, C),
            an unknown block name.
    """
    names = read_class_names(classes)
    arch, net, raw = user_model(model, weights, len(names))
    found = [] if raw is not None else find_blocks(net, image_size)
    chosen = list(blocks) if blocks else [b[0] for b in found]
    clf = HookedClassifier(net, chosen, arch)
    clf.torchscript = raw
    with torch.no_grad():
        x = torch.zeros(2, 3, *image_size)
        c = clf(Normalize(mean, std, bgr)(x)).shape[1]
    if c != len(names):
        raise UserError(f"{arch} has {c} outputs but {classes} names {len(names)} classes")
    spec = ModelSpec(class_names=names, image_size=tuple(image_size), mean=tuple(mean), std=tuple(std),
                     classifier_arch=arch, dataset="", activation=activation, channel_order="bgr" if bgr else "rgb",
                     extra={"blocks": chosen})
    return spec, classifier_state(clf), clf
