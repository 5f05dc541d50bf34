"""A `bench run` request as the user gives it (option text), and the RunConfig it means: defaults filled
in, lists parsed, the data file identified. The command line only collects the options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.config.recipes import DEFAULT_RECIPES, LEGACY_RECIPE, RECIPES, RecipeError, parse_recipes
from bench.config.settings import ConfigError, RunConfig, TrainSettings, file_sha256, parse_int_list
from bench.config.tiers import default_matrix

#: What `--device cpu` runs when no model or sizes are given: a smoke run that fits any laptop.
CPU_DEFAULTS = {"models": ["tiny-llama"], "seq_lens": [32], "batch_sizes": [1, 2]}
#: The timed window on the CPU when --min-steps / --min-seconds are not given: a smoke run checks that
#: training works (a CPU's speed is not a GPU tier's), so a few steps and no minimum time.
CPU_TIMED_WINDOW = {"steps": 4, "min_seconds": 0.0}
#: `--data synthetic` (the default): seeded random token ids of exactly --seq-len, the memory upper bound.
SYNTHETIC = "synthetic"
#: The recipes a CPU can run (the others need CUDA kernels).
CPU_RECIPES = tuple(name for name, r in RECIPES.items() if not r.needs_gpu)


@dataclass
class RunRequest:
    """`bench run` options, as text where the user types lists."""

    tier: str
    device: str = "cuda"
    model: Optional[str] = None
    seq_len: Optional[str] = None
    batch_size: Optional[str] = None
    recipe: Optional[str] = None
    backend: Optional[str] = None  # before recipes: hf, unsloth (read as hf-kbit, unsloth with the loop driver)
    reference: str = "hf-trl"
    driver: str = "trainer"
    data: Optional[Path] = None
    packing: bool = False
    train: Optional[dict] = None  # TrainSettings fields given explicitly (others: defaults; CPU_TIMED_WINDOW)
    run: Optional[dict] = None  # other RunConfig fields given explicitly


def _split(text: Optional[str]) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()] if text else []


def recipes_of(request: RunRequest) -> tuple[list[str], str]:
    """(recipes, driver): --recipe, else the legacy --backend list (loop driver), else the defaults (on the
    CPU, those a CPU can run)."""
    if request.recipe and request.backend:
        raise ConfigError("give --recipe or the older --backend, not both")
    try:
        if request.recipe:
            return parse_recipes(request.recipe), request.driver
    except RecipeError as exc:
        raise ConfigError(str(exc)) from None
    if request.backend:
        names = _split(request.backend)
        unknown = [b for b in names if b not in LEGACY_RECIPE]
        if unknown:
            raise ConfigError(f"unknown backend {unknown[0]!r}; use --recipe ({', '.join(RECIPES)})")
        return [LEGACY_RECIPE[b] for b in names], "loop"
    if request.device == "cpu":
        return [r for r in DEFAULT_RECIPES if r in CPU_RECIPES], request.driver
    return list(DEFAULT_RECIPES), request.driver


def to_config(request: RunRequest) -> RunConfig:
    """The RunConfig a request means (validated). Models and sizes not given default to the tier's default
    matrix, or on the CPU to CPU_DEFAULTS (an 8B model at 1024 tokens would only be killed by the OS)."""
    tier = request.tier.strip().lower()
    defaults = CPU_DEFAULTS if request.device == "cpu" else default_matrix(tier)
    recipes, driver = recipes_of(request)
    data_path = data_sha = None
    if request.data is not None and str(request.data) != SYNTHETIC:
        path = Path(request.data)
        if not path.is_file():
            raise ConfigError(f"--data {path}: no such file")
        data_path, data_sha = str(path.resolve()), file_sha256(path)
    elif request.packing:
        raise ConfigError("--packing needs --data (synthetic batches are full rows already)")
    window = CPU_TIMED_WINDOW if request.device == "cpu" else {}
    train = TrainSettings(**{**window, **(request.train or {})}, driver=driver, data_path=data_path, data_sha256=data_sha,
                          packing=request.packing if data_path else None)
    config = RunConfig(
        tier=tier, models=_split(request.model) or list(defaults["models"]), recipes=recipes,
        reference=request.reference,
        seq_lens=parse_int_list(request.seq_len, "--seq-len") if request.seq_len else list(defaults["seq_lens"]),
        batch_sizes=(parse_int_list(request.batch_size, "--batch-size") if request.batch_size
                     else list(defaults["batch_sizes"])),
        train=train, device=request.device, **(request.run or {}))
    config.validate()
    return config
