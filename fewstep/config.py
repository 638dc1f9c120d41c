"""Recipes: TOML files validated into dataclasses.

A recipe has four tables, ``[data]``, ``[model]``, ``[neuron]`` and ``[train]``, plus ``name`` and
``description``. Unknown keys, wrong types and out-of-range values raise one
:class:`~fewstep.errors.ConfigError` naming the key. ``--set key=value`` overrides use dotted keys
(``train.epochs=3``, ``model.options.width_mult=0.5``); values are parsed as TOML literals.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

from .augment_spec import EventAugmentSpec  # torch-free, as neuron_spec
from .errors import ConfigError, RecipeNotFoundError
from .neuron_spec import NEURON_KIND_NAMES, SURROGATE_NAMES, NeuronSpec  # torch-free: see fewstep.neuron_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    """Which dataset and how to feed it."""

    dataset: str = "digits"
    batch_size: int = 64
    eval_batch_size: int = 512
    crop_padding: int = 0  # random crop after zero padding by this many pixels (0 = off)
    flip: bool = False  # random horizontal flip
    train_limit: int = 0  # use only the first N training samples (0 = all)
    test_limit: int = 0
    # Hold out this many training samples as a validation split (a permutation seeded by val_seed,
    # the same for every train.seed): per-epoch evaluation then runs on it and the test split is
    # scored once, after the last epoch. 0: no validation split (per-epoch test accuracy, as before).
    val_size: int = 0
    val_seed: int = 0
    eval_flip: bool = False  # evaluate on the mean logits of each image and its horizontal mirror
    # Event-level augmentation of the training split, per sample and epoch, before STC (recorded
    # event datasets only): shift (px), drop (max fraction), jitter_us. See fewstep.augment_spec.
    augment: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # passed to the dataset loader


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    timesteps: int = 2
    options: dict = field(default_factory=dict)  # passed to the model factory


@dataclass
class TrainConfig:
    epochs: int = 10
    optimizer: str = "sgd"  # sgd | adamw
    amsgrad: bool = False  # adamw only: the AMSGrad variant (Datta and Beerel fine-tune with Adam + amsgrad)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: int = 0
    loss: str = "ce"  # ce (on the mean output over steps) | tet
    tet_lambda: float = 1e-3
    tet_phi: float = 1.0
    label_smoothing: float = 0.0
    # airbench's batch-norm treatment (BN-followed convs are scale-free, so what moves the network
    # is the BN biases): a learning-rate factor for every BatchNorm bias, and BN scales frozen at
    # their initial value (1 from scratch; the loaded value with init_checkpoint).
    bn_bias_lr_scale: float = 1.0
    freeze_bn_weights: bool = False
    # The weight of each batch's statistics in the BN running averages (unset: the model's own,
    # PyTorch's 0.1). airbench uses 0.4: at its high learning rates the weights move so fast
    # that slow averages describe a network that no longer exists.
    bn_momentum: float | None = None
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    channels_last: bool = True  # on CUDA only
    regularizer: str = "none"  # none | str | rcs (see fewstep.regularizers)
    reg_alpha: float = 0.0  # weight of the regularizer in the loss
    reg_options: dict = field(default_factory=dict)
    init_checkpoint: str = ""  # start from these weights (e.g. a converted SNN) instead of random init
    # Whether training must start from init_checkpoint (fewstep train stops at once when it is
    # empty). Unset: true for the *_converted models, which only make sense fine-tuned from a
    # conversion; set it to false to train one from random weights on purpose.
    requires_init_checkpoint: bool | None = None
    tensorboard: bool = False  # write TensorBoard scalars to out_dir/tb (needs the tensorboard package)
    energy_preset: str = "45nm-float"  # energy constants for the report (45nm-float | 45nm-int)
    compile: bool = False  # torch.compile the whole model (opt-in; results equal eager up to rounding)


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronSpec = field(default_factory=NeuronSpec)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)


#: Datasets that ship with fewstep: the 1,797 8x8 digits (``fewstep/data/digits.npz``) and their
#: emulated saccade event version. A recipe on one of them runs offline, with no ``--data-root``
#: and no download (``fewstep recipes`` marks it "offline"); every other dataset is read from the
#: data root. A test loads each shipped recipe's dataset from an empty root to check this set.
OFFLINE_DATASETS: frozenset[str] = frozenset({"digits", "saccade-digits"})

#: The largest ``train.seed`` (torch, numpy and Python seeds all accept it).
SEED_MAX = 2**63 - 1

_SECTIONS = {"data": DataConfig, "model": ModelConfig, "neuron": NeuronSpec, "train": TrainConfig}


def _check_type(key: str, value: Any, hint: Any, source: str | None) -> Any:
    """Coerce ints to floats where a float is expected; reject everything else that mismatches."""
    text = str(hint)
    if hint is bool or text == "bool":
        ok = isinstance(value, bool)
    elif hint is int or text == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float or text == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range (e.g. 10**400)
                raise ConfigError(key, f"an integer of {value.bit_length()} bits is too large for a float",
                                  source) from None
            if not math.isfinite(number):  # TOML allows nan and inf
                raise ConfigError(key, f"must be a finite number, got {value!r}", source)
            value = number
    elif hint is str or text == "str":
        ok = isinstance(value, str)
    elif hint is dict or text == "dict":
        ok = isinstance(value, dict)
    elif "None" in text:  # optional fields (neuron.reset, neuron.learnable_decay)
        base = text.replace(" | None", "").replace("Optional[", "").rstrip("]")
        return value if value is None else _check_type(key, value, base, source)
    else:  # pragma: no cover - a field type this parser does not know
        raise ConfigError(key, f"unsupported field type {hint}", source)
    if not ok:
        raise ConfigError(key, f"expected {getattr(hint, '__name__', text)}, got {type(value).__name__} {value!r}", source)
    return value


def _build_section(cls: type, section: str, values: Any, source: str | None) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(section, f"must be a table, got {type(values).__name__}", source)
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}", f"unknown key; known keys: {', '.join(sorted(known))}", source)
        kwargs[key] = _check_type(f"{section}.{key}", value, hints[key], source)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(section, str(exc), source) from None


def _positive(key: str, value: float, source: str | None, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", source)


def _validate(r: Recipe, source: str | None) -> None:
    d, m, n, t = r.data, r.model, r.neuron, r.train
    _positive("data.batch_size", d.batch_size, source)
    _positive("data.eval_batch_size", d.eval_batch_size, source)
    for key in ("crop_padding", "train_limit", "test_limit", "val_size", "val_seed"):
        _positive(f"data.{key}", getattr(d, key), source, allow_zero=True)
    if d.augment:
        EventAugmentSpec.from_dict(d.augment, "data.augment", source)
    if not 1 <= m.timesteps <= 1024:
        raise ConfigError("model.timesteps", f"must be in 1..1024, got {m.timesteps}", source)
    _positive("train.epochs", t.epochs, source)
    if not 0 <= t.seed <= SEED_MAX:  # torch.manual_seed takes at most 64 bits
        raise ConfigError("train.seed", f"must be in 0..{SEED_MAX} (2**63 - 1), got {t.seed}", source)
    _positive("train.lr", t.lr, source)
    _positive("train.bn_bias_lr_scale", t.bn_bias_lr_scale, source)
    if t.bn_momentum is not None and not 0 < t.bn_momentum <= 1:
        raise ConfigError("train.bn_momentum", f"must be in (0, 1], got {t.bn_momentum}", source)
    for key in ("momentum", "weight_decay", "grad_clip", "warmup_epochs", "tet_lambda", "label_smoothing", "reg_alpha"):
        _positive(f"train.{key}", getattr(t, key), source, allow_zero=True)
    choices = {"train.optimizer": (t.optimizer, ("sgd", "adamw")), "train.schedule": (t.schedule, ("cosine", "constant")),
               "train.loss": (t.loss, ("ce", "tet")), "train.amp": (t.amp, ("auto", "bf16", "off")),
               "train.regularizer": (t.regularizer, ("none", "str", "rcs")),
               "train.energy_preset": (t.energy_preset, ("45nm-float", "45nm-int")),
               "neuron.kind": (n.kind, NEURON_KIND_NAMES), "neuron.surrogate": (n.surrogate, SURROGATE_NAMES)}
    if n.reset is not None:
        choices["neuron.reset"] = (n.reset, ("hard", "soft"))
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(allowed)}, got {value!r}", source)
    if t.amsgrad and t.optimizer != "adamw":
        raise ConfigError("train.amsgrad", f"needs train.optimizer = 'adamw', got {t.optimizer!r}", source)
    if t.momentum >= 1:
        raise ConfigError("train.momentum", f"must be < 1, got {t.momentum}", source)
    if t.label_smoothing >= 1:
        raise ConfigError("train.label_smoothing", f"must be < 1, got {t.label_smoothing}", source)
    if t.warmup_epochs >= t.epochs and t.warmup_epochs > 0:
        raise ConfigError("train.warmup_epochs", f"must be < train.epochs ({t.epochs}), got {t.warmup_epochs}", source)
    if not 0 < n.decay <= 1:
        raise ConfigError("neuron.decay", f"must be in (0, 1], got {n.decay}", source)
    _positive("neuron.v_threshold", n.v_threshold, source)
    _positive("neuron.width", n.width, source)
    if not 1 <= n.num_thresholds <= 16:
        raise ConfigError("neuron.num_thresholds", f"must be in 1..16, got {n.num_thresholds}", source)
    if n.num_thresholds > 1 and n.kind != "mtlif":
        raise ConfigError("neuron.num_thresholds", "values > 1 need neuron.kind = 'mtlif'", source)


def recipe_from_dict(raw: dict, source: str | None = None) -> Recipe:
    """Validate a parsed recipe (e.g. from TOML) into a :class:`Recipe`."""
    if not isinstance(raw, dict):
        raise ConfigError("<root>", "a recipe must be a table", source)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            kwargs[key] = _build_section(_SECTIONS[key], key, value, source)
        elif key in ("name", "description"):
            kwargs[key] = _check_type(key, value, str, source)
        else:
            raise ConfigError(key, f"unknown key; a recipe has name, description, {', '.join(_SECTIONS)}", source)
    recipe = Recipe(**kwargs)
    _validate(recipe, source)
    return recipe


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3). Values are TOML literals; bare words are strings."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like key=value (e.g. train.epochs=3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(key or text, "empty key in override")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except ValueError as exc:  # valid TOML Python will not read, e.g. an integer of over 4300 digits
        raise ConfigError(key, f"unusable value: {exc}") from None
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``key=value`` override applied (tables created as needed)."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(path), f"{part!r} is not a table")
        node[path[-1]] = value
    return out


def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped in the package, by name (file stem)."""
    root = resources.files("fewstep") / "recipes"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def find_recipe(name_or_path: str) -> Path:
    """A shipped recipe by name, or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    shipped = builtin_recipes()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if path.suffix == ".toml" or len(path.parts) > 1:
        raise RecipeNotFoundError(name_or_path, f"{name_or_path}: no such recipe file")
    raise RecipeNotFoundError(name_or_path, f"no recipe named {name_or_path!r} (nor a file of that name); shipped "
                              f"recipes: {', '.join(sorted(shipped))}; `fewstep recipes` lists them")


def _override_of(key: str, overrides: list[str]) -> str | None:
    """The ``--set`` override that set ``key`` (or a table holding it, or a key inside it), if any."""
    for text in reversed(overrides):  # the last override of a key wins, so it is the one to blame
        set_key = text.split("=", 1)[0].strip()
        if set_key == key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
            return text
    return None


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe.

    A value that a ``--set`` override put in is reported as coming from that override, not from
    the recipe file; other errors name the file (and the overrides, which may have caused them)."""
    path = find_recipe(name_or_path)
    overrides = list(overrides or [])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:  # a directory named *.toml, no permission, a symlink loop
        raise ConfigError("<file>", f"cannot read the recipe file: {exc.strerror or exc}", path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("<file>", f"not a text (UTF-8) file: byte {exc.start} is {exc.object[exc.start]:#04x}",
                          path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<file>", f"not valid TOML: {exc}", path) from None
    except ValueError as exc:  # valid TOML Python will not read, e.g. an integer of over 4300 digits
        raise ConfigError("<file>", f"unusable value: {exc}", path) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError("<file>", "arrays or inline tables nested too deeply to parse", path) from None
    try:
        return recipe_from_dict(apply_overrides(raw, overrides), str(path))
    except ConfigError as exc:
        override = _override_of(exc.key, overrides)
        if override is not None:
            raise ConfigError(exc.key, exc.problem, origin=f"--set {override}") from None
        if overrides and exc.source and exc.origin is None:
            raise ConfigError(exc.key, exc.problem, origin=f"{exc.source} with --set "
                              f"{', '.join(overrides)}") from None
        raise


def runs_offline(recipe: Recipe) -> bool:
    """Whether ``recipe``'s data ships with fewstep (:data:`OFFLINE_DATASETS`): it trains with no
    data folder and no network. (A fine-tune recipe still needs its ``train.init_checkpoint``.)"""
    return recipe.data.dataset in OFFLINE_DATASETS


def recipe_summary(recipe: Recipe) -> str:
    return f"{recipe.name}: {recipe.description}" if recipe.description else recipe.name


__all__ = ["OFFLINE_DATASETS", "DataConfig", "ModelConfig", "Recipe", "TrainConfig", "apply_overrides",
           "builtin_recipes", "find_recipe", "load_recipe", "parse_override", "recipe_from_dict", "runs_offline"]
