"""Any timm backbone that gives feature maps at several strides (`features_only`) as the trunk.

The trunk reads its channels and strides from timm's own `feature_info`, so the heads are
built for whatever the backbone gives; feature maps that timm returns channels-last as NHWC
tensors (Swin, MambaOut, ...) are turned into NCHW views here, once, so no head needs to know.

Pretrained weights never wait on the network: they are read from `weights_path`, or from the
Hugging Face or torch.hub cache where timm keeps what it downloaded, and only when neither has
them and the hub answers within a few seconds does timm download them.
timm is imported on first use, so jobs with a torchvision encoder do not pay for it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from xtask_mt.errors import UserError

_PROBE_TIMEOUT_S = 3.0  # how long the reachability check of the weights' host may take


class TimmEncoderError(UserError):
    """A timm backbone that cannot be built as a trunk with these settings."""


class TimmWeightsError(UserError):
    """Pretrained timm weights requested but not obtainable."""


def _timm() -> Any:
    try:
        import timm
    except ImportError as exc:  # a dependency, but an environment may lack it
        raise TimmEncoderError("encoder=timm needs the timm package: pip install timm "
                               "(or pip install -e . to install every dependency)") from exc
    return timm


def check_timm_name(name: str) -> None:
    """Refuse a name timm does not know, naming close ones."""
    timm = _timm()
    if timm.is_model(name):
        return
    import difflib

    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"close names: {', '.join(close)}" if close else \
        "python -c \"import timm; print(timm.list_models('convnext*'))\" lists names"
    raise TimmEncoderError(f"encoder.name={name!r} is not a timm model ({hint})")


def _pretrained_cfg(name: str) -> Any:
    cfg = _timm().models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise TimmWeightsError(f"encoder.pretrained=true but timm has no pretrained weights for "
                               f"encoder.name={name}; set encoder.pretrained=false or pass "
                               "encoder.weights_path=/path/to/weights")
    return cfg


def _cached_hub_file(repo: str, filename: str | None) -> str | None:
    """The file timm would read for Hugging Face repo `repo`, if the HF cache holds it."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    if filename and filename.endswith(".bin"):
        names.insert(0, filename[:-4] + ".safetensors")
    for candidate in names:
        found = try_to_load_from_cache(repo_id, candidate, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _cached_url_file(url: str) -> str | None:
    """The file torch.hub keeps for `url`, if it is there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    return str(path) if path.is_file() else None


def _reachable(url: str) -> str | None:
    """None if the host of `url` accepts a connection within the probe timeout, else why not."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443),
                                      timeout=_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{parsed.hostname} unreachable: {exc}"


def pretrained_weights_file(name: str, weights_path: str | None) -> str | None:
    """The local file of `name`'s pretrained weights (`weights_path`, else timm's cache), or
    None when timm must download them, which only happens when the host answers at once.

    Raises TimmWeightsError, one line, when the weights are neither here nor reachable:
    that is what an offline machine without them gets, without waiting on retries."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise TimmWeightsError(f"encoder.weights_path={weights_path!r} does not exist; point "
                                   f"it at the weights of timm's {name} (model.safetensors or "
                                   "a .pth/.bin state dict) or set encoder.pretrained=false")
        return str(path)
    cfg = _pretrained_cfg(name)
    if cfg.hf_hub_id and (found := _cached_hub_file(cfg.hf_hub_id, cfg.hf_hub_filename)):
        return found
    if cfg.url and (found := _cached_url_file(cfg.url)):
        return found
    from huggingface_hub import constants

    source = f"{constants.ENDPOINT}/{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _reachable(source)
    if why is None:
        return None
    raise TimmWeightsError(f"encoder.pretrained=true but timm's weights for {name} are not in "
                           f"its cache and cannot be downloaded ({why}); download {source} "
                           "elsewhere and pass encoder.weights_path=/path/to/file, or set "
                           "encoder.pretrained=false")


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or a torch file (weights_only), unwrapped from the
    'state_dict' / 'model' entry some training scripts save it under."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file shows as many error types
        raise TimmWeightsError(f"cannot read pretrained weights {path}: {type(exc).__name__}: "
                               f"{exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TimmWeightsError(f"{path} holds no state dict")
    return state


class _MissingKeys(logging.Handler):
    """Collects the keys timm reports missing when it loads pretrained weights: it loads
    them non-strictly (the classifier is dropped), so a file of another model would
    otherwise leave the backbone at its random init with only a log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.missing: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys ("):
            self.missing += message[len("Missing keys ("):message.index(")")].split(", ")


@contextmanager
def _missing_keys() -> Iterator[_MissingKeys]:
    logger = logging.getLogger("timm.models._builder")
    handler, level = _MissingKeys(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _is_nhwc(net: nn.Module) -> bool:
    fmt = getattr(net, "output_fmt", "NCHW")
    return str(getattr(fmt, "value", fmt)) == "NHWC"


class TimmEncoder(nn.Module):
    """timm's `features_only` network for `name`, returning NCHW maps shallowest first.

    `channels` and `strides` come from timm's feature_info. `img_size` (height, width) builds
    a model made for one input size (most ViTs, Swin) for these images; without it such a
    model is refused, since it would fail at its first batch. `out_indices` picks the feature
    levels (timm's argument); `model_kwargs` go to timm.create_model as they are.
    """

    def __init__(self, name: str, pretrained: bool = False, weights_path: str | None = None,
                 img_size: Sequence[int] | None = None, out_indices: Sequence[int] | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_timm_name(name)
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        if img_size is not None:
            kwargs["img_size"] = tuple(int(v) for v in img_size)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(v) for v in out_indices)
        if pretrained or weights_path:
            path = pretrained_weights_file(name, weights_path)
            if path is not None:
                kwargs["pretrained_cfg_overlay"] = {"state_dict": _read_state_dict(path)}
        with _missing_keys() as loading:
            self.net = self._create(name, bool(pretrained or weights_path), kwargs)
        base_cfg = _timm().models.get_pretrained_cfg(name)  # the features net's lacks it
        classifier = getattr(base_cfg, "classifier", None) or ()
        classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        missing = [k for k in loading.missing if not k.startswith(tuple(f"{c}." for c in
                                                                        classifier))]
        if missing:  # the classifier is dropped on purpose, anything else is a wrong file
            raise TimmWeightsError(
                f"the pretrained weights {weights_path or ''} do not fit timm's {name}: they "
                f"lack {len(missing)} of its tensors ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}); pass the weights of this model or "
                "set encoder.pretrained=false")
        fixed = bool(getattr(self.net, "pretrained_cfg", {}).get("fixed_input_size", False))
        if fixed and img_size is None:
            size = getattr(self.net, "pretrained_cfg", {}).get("input_size", ())[-2:]
            raise TimmEncoderError(
                f"encoder.name={name} takes inputs of one size only ({'x'.join(map(str, size))}"
                " as built by default); build it for your images with encoder.img_size=[H,W] "
                "equal to dataset.height and dataset.width, or pick a backbone without a fixed "
                "input size")
        info = self.net.feature_info
        self.name = name
        self.channels: tuple[int, ...] = tuple(int(c) for c in info.channels())
        self.strides: tuple[int, ...] = tuple(int(s) for s in info.reduction())
        self.fixed_input_size = fixed
        self.nhwc = _is_nhwc(self.net)

    @staticmethod
    def _create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
        try:
            return _timm().create_model(name, pretrained=pretrained, features_only=True,
                                        **kwargs)
        except UserError:
            raise
        except Exception as exc:  # timm reports unsupported options in many error types
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            if "pretrained_cfg_overlay" in kwargs and "state_dict" in str(exc):
                raise TimmWeightsError(f"the pretrained weights do not fit timm's {name}: "
                                       f"{reason}") from exc
            shown = "".join(f", {k}={v}" for k, v in kwargs.items()
                            if k != "pretrained_cfg_overlay")
            raise TimmEncoderError(f"timm cannot build encoder.name={name} as a feature "
                                   f"backbone (features_only=True{shown}): {reason}") from exc

    def _deepest_stage(self) -> nn.Module | None:
        """The module that gives the deepest map, as timm's feature_info names it (under
        the features wrapper's own naming: flattened, or below `model`)."""
        name = self.net.feature_info.module_name()[-1]
        for candidate in (name, name.replace(".", "_"), f"model.{name}"):
            try:
                return self.net.get_submodule(candidate)
            except AttributeError:
                continue
        return None

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The parameters of the stage that gives the deepest map: where GradNorm measures
        task gradients. The whole stage rather than its last convolution, whose gradient is
        zero at the start in backbones that zero-initialise each block's last norm (timm's
        ResNets and RegNets). Without a stage found: the last weight, in the order timm
        registers its layers."""
        stage = self._deepest_stage()
        params = list(stage.parameters()) if stage is not None else []
        return params or [p for p in self.net.parameters() if p.ndim >= 2][-1:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.net(x))
        if self.nhwc:  # a view: NHWC memory read as NCHW is a channels-last tensor
            features = [f.permute(0, 3, 1, 2) for f in features]
        return features
