"""Run configuration: the matrix a user asks for, and the cells it expands into."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from bench.config.recipes import DEFAULT_RECIPES, DEFAULT_REFERENCE, DRIVERS, RecipeError, get_recipe
from bench.schema.key import cell_id_of, pair_key_of

#: Library families a recipe loads its model with (bench.config.recipes.Recipe.family).
BACKENDS = ("hf", "unsloth")
OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "adamw_torch", "paged_adamw_32bit")
CHECKPOINTING = ("auto", "none", "standard", "unsloth")
#: The timed window (after the warm-up): it runs until both minimums are met, and stops at the maximum
#: however few seconds it lasted. Ten steps and ten seconds give a median and 20th / 80th percentiles
#: from enough steps, and average over the GPU's clock and power swings; 500 steps bound a window of
#: steps faster than 20 ms. `bench run --device cpu` and the tests use fewer (bench.config.request).
DEFAULT_MIN_STEPS = 10
DEFAULT_MIN_SECONDS = 10.0
DEFAULT_MAX_STEPS = 500
#: `bench fit` probes sequence lengths in multiples of this many tokens (the search's grid).
FIT_SEQ_MULTIPLE = 256


class ConfigError(ValueError):
    """A configuration the suite refuses (CLI exit code 2)."""


def file_sha256(path: Path) -> str:
    """The content hash of a data file: what identifies the data of a cell, wherever the file lies."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TrainSettings:
    """What must be identical between the recipes of one configuration for their cells to be compared."""

    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: Optional[tuple[str, ...]] = None  # None: the architecture's attention + MLP set
    optimizer: str = "adamw_8bit"
    learning_rate: float = 2e-4
    grad_accum: int = 1
    steps: int = DEFAULT_MIN_STEPS  # the timed window's minimum optimizer steps (--min-steps)
    warmup_steps: int = 2  # untimed steps first (compilation, allocator warm-up)
    # measurement quality, not identity (outside the pair_key hash): the timed window also runs until
    # `min_seconds` have passed in it, but never past `max_steps` timed steps (--min-seconds, --max-steps)
    min_seconds: float = DEFAULT_MIN_SECONDS
    max_steps: Optional[int] = None  # None: DEFAULT_MAX_STEPS, or `steps` when more (see max_timed_steps)
    seed: int = 1234
    gradient_checkpointing: str = "auto"  # auto: the recipe's own (hf recipes: standard, unsloth: unsloth)
    driver: str = "trainer"  # "trainer": TRL's SFTTrainer, as users run it; "loop": the suite's plain loop
    data_path: Optional[str] = None  # --data file; None: synthetic fixed-length token batches
    data_sha256: Optional[str] = None  # its content hash (identifies the data in the cell key)
    packing: Optional[bool] = None  # --packing with --data; None for synthetic data

    def checkpointing_for(self, recipe: str) -> str:
        if self.gradient_checkpointing != "auto":
            return self.gradient_checkpointing
        return get_recipe(recipe).checkpointing

    @property
    def max_timed_steps(self) -> int:
        """The most timed steps a cell runs: --max-steps, else DEFAULT_MAX_STEPS (or --min-steps when more)."""
        return self.max_steps if self.max_steps is not None else max(self.steps, DEFAULT_MAX_STEPS)

    def validate(self) -> None:
        for name, option in (("lora_r", "lora-r"), ("lora_alpha", "lora-alpha"), ("grad_accum", "grad-accum"),
                             ("steps", "min-steps")):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{option} must be > 0, got {getattr(self, name)}")
        if self.min_seconds < 0:
            raise ConfigError(f"min-seconds must be >= 0, got {self.min_seconds}")
        if self.max_steps is not None and self.max_steps < self.steps:
            raise ConfigError(f"max-steps ({self.max_steps}) must be >= min-steps ({self.steps})")
        if self.warmup_steps < 1:
            raise ConfigError("warmup-steps must be >= 1 (the first step compiles and is not timed)")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate <= 0:
            raise ConfigError("learning-rate must be > 0")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.gradient_checkpointing not in CHECKPOINTING:
            raise ConfigError(
                f"unknown gradient checkpointing {self.gradient_checkpointing!r}; known: {', '.join(CHECKPOINTING)}"
            )
        if self.driver not in DRIVERS:
            raise ConfigError(f"unknown driver {self.driver!r}; known: {', '.join(DRIVERS)}")
        if self.data_path is not None and self.driver != "trainer":
            raise ConfigError("training data (--data) needs the trainer driver: the loop trains on synthetic batches")


@dataclass(frozen=True)
class Cell:
    """One measured configuration: a recipe, a model and one (seq_len, batch_size)."""

    recipe: str
    model: str
    tier: str
    mode: str
    seq_len: int
    batch_size: int
    train: TrainSettings
    dtype: str
    target_modules: tuple[str, ...]

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size * self.train.grad_accum

    @property
    def backend(self) -> str:
        """The recipe's library family ("hf" | "unsloth")."""
        return get_recipe(self.recipe).family

    @property
    def pair_key(self) -> str:
        """Identifies the configuration independent of the recipe (every recipe's cell shares it)."""
        t = self.train
        return pair_key_of({
            "model": self.model, "tier": self.tier, "mode": self.mode, "seq_len": self.seq_len,
            "batch_size": self.batch_size, "dtype": self.dtype, "lora_r": t.lora_r, "lora_alpha": t.lora_alpha,
            "lora_dropout": t.lora_dropout, "target_modules": self.target_modules, "optimizer": t.optimizer,
            "learning_rate": t.learning_rate, "grad_accum": t.grad_accum, "steps": t.steps,
            "warmup_steps": t.warmup_steps, "seed": t.seed, "gradient_checkpointing": t.gradient_checkpointing,
            "driver": t.driver, "data_sha256": t.data_sha256, "packing": t.packing,
        })

    @property
    def cell_id(self) -> str:
        return cell_id_of(self.pair_key, self.recipe)

    @property
    def gradient_checkpointing(self) -> str:
        return self.train.checkpointing_for(self.recipe)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train"] = asdict(self.train)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        d = dict(d)
        train = dict(d.pop("train"))
        if train.get("target_modules") is not None:
            train["target_modules"] = tuple(train["target_modules"])
        return cls(train=TrainSettings(**train), target_modules=tuple(d.pop("target_modules")), **d)


@dataclass
class RunConfig:
    """The matrix of a `bench run`: models x recipes x seq_lens x batch_sizes on one tier."""

    tier: str
    models: list[str]
    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    reference: str = DEFAULT_REFERENCE  # the recipe speed-ups and memory savings are measured against
    seq_lens: list[int] = field(default_factory=lambda: [1024])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    train: TrainSettings = field(default_factory=TrainSettings)
    device: str = "cuda"
    isolate: str = "model"  # "model": one worker per (recipe, model); "cell": one per cell
    cell_timeout_s: float = 900.0
    load_timeout_s: float = 900.0
    trust_remote_code: bool = False
    attn_implementation: str = "sdpa"
    skip_dominated: bool = True  # cells larger in both seq and batch than an OOM cell are skipped
    fast_paths: bool = True  # profile one extra step per Unsloth worker to record which kernels ran
    repeats: int = 1  # every cell measured this many times, each in a fresh worker (a new model load)

    def validate(self) -> None:
        self.train.validate()
        try:
            for r in [*self.recipes, self.reference]:
                get_recipe(r)
        except RecipeError as exc:
            raise ConfigError(str(exc)) from None
        if not self.recipes or not self.models:
            raise ConfigError("at least one recipe and one model are needed")
        for name, values, least in (("seq-len", self.seq_lens, 2), ("batch-size", self.batch_sizes, 1)):
            if not values:
                raise ConfigError(f"{name} needs at least one value")
            for v in values:
                if v <= 0:
                    raise ConfigError(f"{name} must be > 0, got {v}")
                if v < least:
                    raise ConfigError(f"{name} {v} cannot train: a causal LM needs at least {least} tokens per row "
                                      "(it predicts each token from the ones before)")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if self.isolate not in ("model", "cell"):
            raise ConfigError("isolate must be 'model' or 'cell'")
        if self.device not in ("cuda", "cpu"):
            raise ConfigError("device must be 'cuda' or 'cpu'")

    def with_train(self, **changes) -> "RunConfig":
        return replace(self, train=replace(self.train, **changes))


def order_cells(cells: list[Cell]) -> list[Cell]:
    """Smallest memory first: fewest tokens per step, then shorter sequences."""
    return sorted(cells, key=lambda c: (c.batch_size * c.seq_len, c.seq_len, c.batch_size))


def dominates(bigger: Cell, smaller: Cell) -> bool:
    """True if `bigger` needs at least the memory of `smaller` (same recipe and model, >= in both sizes)."""
    return (
        bigger.recipe == smaller.recipe
        and bigger.model == smaller.model
        and bigger.seq_len >= smaller.seq_len
        and bigger.batch_size >= smaller.batch_size
    )


def parse_int_list(text: str, name: str) -> list[int]:
    """'1024,2048' -> [1024, 2048], with a clear error for anything else."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not a whole number") from None
    if not out:
        raise ConfigError(f"{name}: no values given")
    return out


def expand_groups(config: RunConfig, models: list, tier: str, mode: str, dtype: str) -> list[tuple[str, object, list[Cell]]]:
    """The matrix as worker groups: (recipe, model ref, its cells smallest first), one per recipe x model.

    `models` are resolved references (bench.config.models.ModelRef) in the order of config.models;
    tier / mode / dtype come from the tier plan. Raises ConfigError for a size the model cannot take
    or a checkpointing the recipe does not have.
    """
    groups = []
    for ref in models:
        for s in config.seq_lens:
            if ref.max_positions and s > ref.max_positions:
                raise ConfigError(f"seq-len {s} is over {ref.name}'s {ref.max_positions} positions")
        targets = tuple(config.train.target_modules or ref.target_modules())
        for recipe in config.recipes:
            cells = [Cell(recipe=recipe, model=ref.name, tier=tier, mode=mode, seq_len=s, batch_size=b,
                          train=config.train, dtype=dtype, target_modules=targets)
                     for s in config.seq_lens for b in config.batch_sizes]
            if cells and cells[0].backend != "unsloth" and cells[0].gradient_checkpointing == "unsloth":
                raise ConfigError(f"gradient checkpointing 'unsloth' exists only in Unsloth's recipes, not {recipe}")
            groups.append((recipe, ref, order_cells(cells)))
    return groups
