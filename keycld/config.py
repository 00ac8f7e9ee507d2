"""One configuration object for a training run; it is what ``config.json`` stores."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from pathlib import Path

from keycld import fileio
from keycld.data import CONTROLS, INIT_MODES, DatasetConfig, num_val_runs
from keycld.model.integrators import SOLVERS
from keycld.system import System
from keycld.tasks import ENVIRONMENTS

MODELS = ("keycld", "no_constraint", "node2", "fc")
STAGES = ("warmup", "main", "refine")  # the stages of a schedule, in order (TrainConfig.stage_name)
REFINE_WHEN = ("epoch", "localised")  # what starts the refine stage
# The paper's experiment table: 8 dataset configurations × the models above.
DATASETS = [("pendulum", "no"), ("pendulum", "yes"), ("cartpole", "no"), ("cartpole", "underactuated"),
            ("cartpole", "yes"), ("acrobot", "no"), ("acrobot", "underactuated"), ("acrobot", "yes")]
REPRO_MODELS = MODELS

# Upper bounds of the size settings (a value above one is refused before any work): far above
# the paper's (500 runs × 50 frames, h = 32, 40 epochs), below sizes that overflow or cannot fit.
MAX_NUM_RUNS = 100_000
MAX_NUM_FRAMES = 10_000
MAX_HIDDEN_DIM = 1024
MAX_NUM_EPOCHS = 100_000
SEED_LIMIT = 2 ** 31  # training seeds lie in [0, SEED_LIMIT) (jax.random.PRNGKey(seed + 1))
DATA_SEED_LIMIT = 2 ** 32  # a dataset's run seeds lie in [0, DATA_SEED_LIMIT) (MuJoCo's RandomState)


def max_predicted_steps(num_frames: int) -> int:
    """The longest loss horizon (steps) that sequences of ``num_frames`` frames allow: the
    dynamics loss predicts n steps from each of num_frames - 1 - n starting states
    (``keycld.losses.dynamics_loss``), and the configuration keeps at least 2 of them."""
    return num_frames - 3


def check_dataset_size(num_runs: int, num_frames: int, first_seed: int = 0) -> None:
    """ValueError naming the bad value unless 1 <= num_runs <= MAX_NUM_RUNS, 3 <= num_frames <=
    MAX_NUM_FRAMES and the run seeds first_seed … first_seed + num_runs − 1 lie in [0, 2**32)."""
    _check_range("num_runs", num_runs, 1, MAX_NUM_RUNS)
    _check_range("num_frames", num_frames, 3, MAX_NUM_FRAMES)
    if isinstance(first_seed, bool) or not isinstance(first_seed, numbers.Integral) \
            or not 0 <= first_seed <= DATA_SEED_LIMIT - num_runs:
        raise ValueError(f"first_seed must be an integer in [0, 2**32 - num_runs = {DATA_SEED_LIMIT - num_runs}] "
                         f"(run seeds first_seed … first_seed + num_runs - 1 must be below 2**32), got {first_seed!r}")


def _check_range(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


# the Python types a config.json value of each annotated field type may have
_FIELD_TYPES = {"str": (str,), "int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,)}
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a KeyCLD run (defaults = the paper's configuration).

    Attributes (units): learning_rate for encoder/renderer (the dynamics nets use
    dynamics_lr_factor × it, 0.2 in the paper);
    dynamics_weight, bce_weight multiply the loss terms; num_predicted_steps n of the
    multi-step dynamics loss; constraint_weight multiplies the constraint term (mean Φ² of
    the encoded keypoints; not in the paper, 0 = off; see keycld.losses); sigma of the
    Gaussian maps in image units.
    max_steps_per_epoch limits the training sequences seen per epoch (None: all).
    init_from: a run (or exported model) directory whose weights start this run (fine-tuning
    with other settings; same model and num_hidden_dim); None: random initialisation.
    Your own system: ``environment`` is the System's name, ``system_attr`` the name of the
    System in the run directory's copy of its spec file, ``data`` the npz of runs (absolute
    path) and ``data_sha256`` its hash; ``init_mode`` and ``control`` are None and
    ``num_runs``/``num_frames`` are the data's. For the paper's tasks all four are None.
    The schedule has up to three stages (``stage_name``, ``stage``; the optimiser state
    carries over between them; the defaults give the paper's single stage):

    * warm-up: the first warmup_epochs train the encoder and renderer alone (dynamics term off;
      the BCE term, which concentrates each heatmap, stays on), rendering Gaussian maps of
      width warmup_sigma (None = sigma), plus warmup_foreground_weight × the foreground term
      (``keycld.losses.foreground_attention``: heatmaps drawn to the pixels that differ from
      the data's static background; 0 = off);
    * main: the configured loss;
    * refine: the dynamics train with refine_num_predicted_steps and refine_dynamics_lr_factor
      (each None = unchanged). With refine_when "epoch" it is the last refine_epochs epochs
      (0 = no refine stage). With refine_when "localised" it starts after the first main-stage
      epoch whose validation keypoints are localised: their reconstruction ratio
      (``keycld.evaluate.autoencoding``: pixel MSE of the auto-encoded frames / ε) below
      localised_ratio; the training loop records that epoch (``refine_from``).
    """

    environment: str = "pendulum"
    init_mode: str | None = "random"
    control: str | None = "yes"
    model: str = "keycld"
    batch_size: int = 1
    dynamics_weight: float = 1.0
    bce_weight: float = 1.0
    constraint_weight: float = 0.0
    solver: str = "euler"
    learning_rate: float = 3e-4
    num_epochs: int = 40
    num_hidden_dim: int = 32
    num_predicted_steps: int = 4
    seed: int = 0
    num_runs: int = 500
    num_frames: int = 50
    sigma: float = 0.1
    augment: bool = True
    max_steps_per_epoch: int | None = None
    grad_clip: float = 5.0
    dynamics_lr_factor: float = 0.2
    preset: str | None = None
    init_from: str | None = None
    refine_epochs: int = 0
    refine_num_predicted_steps: int | None = None
    refine_dynamics_lr_factor: float | None = None
    warmup_epochs: int = 0
    warmup_sigma: float | None = None
    warmup_foreground_weight: float = 0.0
    refine_when: str = "epoch"
    localised_ratio: float = 0.3
    system_attr: str | None = None
    data: str | None = None
    data_sha256: str | None = None

    def __post_init__(self):
        self._check_types()
        if self.user_data:
            if not (isinstance(self.environment, str) and self.environment):
                raise ValueError(f"environment must name the System, got {self.environment!r}")
            if not (isinstance(self.system_attr, str) and self.system_attr.isidentifier()):
                raise ValueError(f"system_attr must be the System's variable name, got {self.system_attr!r}")
            if self.init_mode is not None or self.control is not None:
                raise ValueError("init_mode and control describe the paper's datasets; with data they must be None, "
                                 f"got {self.init_mode!r}, {self.control!r}")
        else:
            if self.system_attr is not None or self.data_sha256 is not None:
                raise ValueError("system_attr and data_sha256 need data (your own runs)")
            _check_choice("environment", self.environment, ENVIRONMENTS)
            _check_choice("init_mode", self.init_mode, INIT_MODES)
            _check_choice("control", self.control, CONTROLS)
        _check_choice("model", self.model, MODELS)
        _check_choice("refine_when", self.refine_when, REFINE_WHEN)
        _check_choice("solver", self.solver, SOLVERS)
        # the refine_* settings are optional (None = the main stage's value) but checked alike
        for name in ("batch_size", "num_predicted_steps", "refine_num_predicted_steps", "max_steps_per_epoch"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        check_dataset_size(self.num_runs, self.num_frames)
        _check_range("num_epochs", self.num_epochs, 1, MAX_NUM_EPOCHS)
        _check_range("num_hidden_dim", self.num_hidden_dim, 8 if self.model != "fc" else 1, MAX_HIDDEN_DIM)
        for name in ("dynamics_weight", "bce_weight", "constraint_weight", "warmup_foreground_weight"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("learning_rate", "sigma", "grad_clip", "dynamics_lr_factor", "refine_dynamics_lr_factor",
                     "warmup_sigma", "localised_ratio"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v <= 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        n_train = self.num_runs - num_val_runs(self.num_runs)
        if self.batch_size > n_train:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {n_train} training runs (num_runs "
                             f"{self.num_runs} minus {self.num_runs - n_train} validation runs)")
        for name in ("num_predicted_steps", "refine_num_predicted_steps"):
            v = getattr(self, name)
            if v is not None and v > max_predicted_steps(self.num_frames):
                raise ValueError(f"{name} must be <= num_frames - 3 = {max_predicted_steps(self.num_frames)}, got {v}")
        if isinstance(self.refine_epochs, bool) or not isinstance(self.refine_epochs, int) \
                or not 0 <= self.refine_epochs <= self.num_epochs:
            raise ValueError(f"refine_epochs must be an integer in [0, num_epochs = {self.num_epochs}], "
                             f"got {self.refine_epochs!r}")
        refines = self.refine_num_predicted_steps is not None or self.refine_dynamics_lr_factor is not None
        if self.refine_epochs and not refines:
            raise ValueError(f"refine_epochs = {self.refine_epochs} changes nothing: set refine_num_predicted_steps "
                             f"and/or refine_dynamics_lr_factor, or refine_epochs = 0")
        if self.refine_when == "localised":
            if not refines:
                raise ValueError("refine_when 'localised' changes nothing: set refine_num_predicted_steps and/or "
                                 "refine_dynamics_lr_factor")
            if self.refine_epochs:
                raise ValueError(f"refine_epochs = {self.refine_epochs} counts the refine stage's epochs from the end "
                                 "(refine_when 'epoch'); with refine_when 'localised' the stage's start is measured, "
                                 "so refine_epochs must be 0")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) \
                or not 0 <= self.warmup_epochs < self.num_epochs - self.refine_epochs:
            raise ValueError(f"warmup_epochs must be an integer in [0, num_epochs - refine_epochs = "
                             f"{self.num_epochs - self.refine_epochs}) (at least one main-stage epoch), "
                             f"got {self.warmup_epochs!r}")
        if self.warmup_sigma is not None and not self.warmup_epochs:
            raise ValueError("warmup_sigma needs warmup_epochs > 0")
        if self.warmup_foreground_weight and not self.warmup_epochs:
            raise ValueError(f"warmup_foreground_weight = {self.warmup_foreground_weight} needs warmup_epochs > 0")
        if self.warmup_foreground_weight and self.model == "fc":
            raise ValueError(f"warmup_foreground_weight = {self.warmup_foreground_weight} needs a heatmap model "
                             f"({', '.join(m for m in MODELS if m != 'fc')}), got model 'fc'")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, 2**31), got {self.seed!r}")
        if not self.user_data:
            self.dataset_config()  # validates control vs environment

    def _check_types(self) -> None:
        """ValueError naming the first field whose value has the wrong type (``int``: an integer,
        not a bool; ``float``: any real number; ``X | None``: also None); numbers become plain
        ``int`` / ``float`` so the config stays JSON."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind, _, optional = f.type.partition(" | ")
            if v is None and optional:
                continue
            if not isinstance(v, _FIELD_TYPES[kind]) or (isinstance(v, bool) and kind in ("int", "float")):
                raise ValueError(f"{f.name} must be {_TYPE_WORDS[kind]}{' or null' if optional else ''}, "
                                 f"got {v!r}")
            if kind in ("int", "float"):
                object.__setattr__(self, f.name, int(v) if kind == "int" else float(v))

    @property
    def user_data(self) -> bool:
        """True for a run on your own npz of runs (``data``), False for a paper dataset."""
        return self.data is not None

    def stage_name(self, epoch: int, refine_from: int | None = None) -> str:
        """The stage (``STAGES``) epoch ``epoch`` (0-based) trains in; ``refine_from``: the first
        refine epoch measured so far with refine_when "localised" (None: not yet)."""
        if epoch < self.warmup_epochs:
            return "warmup"
        if self.refine_when == "epoch":
            refine = self.refine_epochs and epoch >= self.num_epochs - self.refine_epochs
        else:
            refine = refine_from is not None and epoch >= refine_from
        return "refine" if refine else "main"

    def stage(self, epoch: int, refine_from: int | None = None) -> "TrainConfig":
        """The settings epoch ``epoch`` (0-based) trains with (see ``stage_name``): this config in
        the main stage (without the warm-up's foreground term), the loss without its dynamics
        term and warmup_sigma in the warm-up, the refine stage's loss horizon and dynamics
        learning rate in the refine stage."""
        name = self.stage_name(epoch, refine_from)
        if name == "warmup":
            return dataclasses.replace(self, dynamics_weight=0.0,
                                       sigma=self.warmup_sigma if self.warmup_sigma is not None else self.sigma)
        # the foreground term belongs to the warm-up alone
        changes = {"warmup_foreground_weight": 0.0} if self.warmup_foreground_weight else {}
        if name == "main":
            return dataclasses.replace(self, **changes) if changes else self
        if self.refine_num_predicted_steps is not None:
            changes["num_predicted_steps"] = self.refine_num_predicted_steps
        if self.refine_dynamics_lr_factor is not None:
            changes["dynamics_lr_factor"] = self.refine_dynamics_lr_factor
        return dataclasses.replace(self, **changes)

    def dataset_config(self) -> DatasetConfig:
        """The paper dataset this run trains on (not defined for your own runs)."""
        if self.user_data:
            raise ValueError(f"run on your own data {self.data!r} has no paper dataset configuration")
        return DatasetConfig(self.environment, self.init_mode, self.control, self.num_runs, self.num_frames)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a configuration is a JSON object of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        fileio.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


# Presets override the paper's defaults. "cpu": a usable model on a 2-core CPU within an hour:
# h = 16 and 12 epochs; one warm-up epoch without the dynamics term, Gaussian maps twice as wide,
# then the paper's loss at the paper's dynamics learning rate; once the validation keypoints
# auto-encode the frames to a fraction localised_ratio of ε, the refine stage trains
# the dynamics at the encoder's learning rate on four times the loss horizon. preset_fields adds
# the horizons, which follow from the system's dt.
PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": dict(num_hidden_dim=16, num_epochs=12, warmup_epochs=1, warmup_sigma=0.2, refine_when="localised",
                localised_ratio=0.3, refine_dynamics_lr_factor=1.0),
}

# Horizon of the multi-step dynamics loss in seconds under the cpu preset (main stage): at
# dt = 0.01 s, 4 steps move a falling link about 0.003 image units, below the encoder's jitter,
# so the horizon is set in seconds, not steps. The refine stage trains on
# CPU_PRESET_REFINE_FACTOR times it (0.32 s), long enough that an error in the learned potential
# or masses shows as a phase error the loss sees.
CPU_PRESET_HORIZON_S = 0.08
CPU_PRESET_REFINE_FACTOR = 4


def preset_fields(name: str, system: System | str, num_frames: int | None = None) -> dict:
    """The TrainConfig fields a preset sets for ``system`` (a System or a built-in name). The
    cpu preset is the same for every system except for its loss horizons in steps, which come
    from the system's dt: ``CPU_PRESET_HORIZON_S`` in the main stage and
    ``CPU_PRESET_REFINE_FACTOR`` times it in the refine stage, each at least 1 step and at most
    the longest horizon the data's sequences allow (``num_frames`` - 3 steps; None = the
    default sequence length, 50 frames)."""
    from keycld.systems import get

    _check_choice("preset", name, PRESETS)
    system = get(system) if isinstance(system, str) else system
    fields = dict(PRESETS[name])
    if name == "cpu":
        longest = max_predicted_steps(TrainConfig.num_frames if num_frames is None else num_frames)

        def steps(seconds: float) -> int:
            return max(1, min(longest, round(seconds / system.dt)))

        fields.update(num_predicted_steps=steps(CPU_PRESET_HORIZON_S),
                      refine_num_predicted_steps=steps(CPU_PRESET_REFINE_FACTOR * CPU_PRESET_HORIZON_S))
    return fields
