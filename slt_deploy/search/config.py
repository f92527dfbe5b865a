"""`SearchConfig`: the one object a search runs from. The CLI and TOML recipes fill the same
dataclass, so a run directory's config replays the run exactly."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from slt_deploy.errors import SltError

# the names the registries hold (tests/test_cli_choices.py keeps them equal), written out so
# that `--help` answers without importing torch
METHOD_NAMES = ("gates", "edge-popup", "dense")  # search/methods.py
GATE_NAMES = ("stg", "hard-concrete")  # masking/gates.py
INIT_SCHEMES = ("uniform", "signed-constant", "kaiming-normal")  # init.py
OPTIMIZERS = ("adam", "sgd")  # search/methods.py, build_optimizer
GRANULARITIES = ("unstructured", "2:4", "channel", "channel+unstructured")
COSTS = ("weights", "flops")
TARGET_SCOPES = ("all", "structure")
DEVICES = ("auto", "cpu", "cuda")
ON_NAN = ("stop", "skip-batch")
BUDGETS = ("shift", "penalty")
_TYPES = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict": dict,
    "None": type(None),
}


def _has_type(value: object, annotation: str) -> bool:
    """Check a value against a field's annotation (`int`, `float | None`, ...): recipes and
    tickets are data from outside; a wrong type must be a clear error, not a crash later."""
    for name in annotation.split("|"):
        expected = _TYPES[name.strip()]
        if isinstance(value, bool) and expected is not bool:
            continue  # True is an int to Python, not to a user
        if isinstance(value, expected):
            return True
    return False


COMPILE_MIN_STEPS = 2000


# Settings added after runs were first recorded, with the value that reproduces what those runs
# did (a recorded config without the key ran without the feature).
ADDED_SETTINGS = {"windup_reset": False, "budget": "penalty", "val_seed": 1}


def setting(
    default: object,
    help: str | None = None,
    *,
    choices: tuple[str, ...] | None = None,
    path: bool = False,
    cli: bool = True,
):
    """A SearchConfig field and its command-line option in one place: `search` and `sweep`
    build `--field-name` from the type, default, help and choices given here (cli.py,
    `search_options`), and `validate` checks the choices for recipes and tickets too."""
    return field(default=default, metadata=_metadata(help, choices, path, cli))


def _metadata(help=None, choices=None, path=False, cli=True) -> dict:
    return {"help": help, "choices": choices, "path": path, "cli": cli}


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search; the CLI's options are generated from these fields."""

    model: str = setting(
        "lenet-300-100",
        "lenet-300-100, fc, conv2/4/6/8, resnet18, resnet50, wide_resnet50_2, wrn-28-10, "
        "vit_tiny/small/base, swin_tiny, or timm:<any timm model>.",
    )
    model_kwargs: dict = field(  # --width, --depth, --model-arg, ... fill it
        default_factory=dict, metadata=_metadata(cli=False)
    )
    data: str = setting(
        "digits", "mnist, fashion-mnist, cifar10, imagefolder:PATH, or digits (embedded)."
    )
    data_dir: str | None = setting(
        None,
        "Folder holding the data set's files (IDX, CIFAR batches, ImageFolder, .tar).",
        path=True,
    )
    download: bool = setting(
        False, "Fetch the data set with torchvision when missing (needs internet)."
    )
    subset: int | None = setting(
        None, "Use only N training and N test samples (a fixed permutation, not the first N)."
    )
    val_split: int | None = setting(
        None,
        "Hold N training samples out as a validation split (the same N for every run and "
        "seed); its accuracy is recorded beside the test accuracy. Choose settings on it.",
    )
    val_seed: int = setting(
        1,
        "Which training samples --val-split holds out (the seed of its permutation). The "
        "tool's defaults were chosen on split 1; another value checks a choice on images it "
        "was not chosen on.",
    )
    max_steps: int | None = setting(None, "Stop after N optimizer steps (quick runs).")
    method: str = setting(
        "gates",
        "Relaxed Bernoulli gates, the edge-popup baseline, or ordinary dense training (the "
        "accuracy ceiling).",
        choices=METHOD_NAMES,
    )
    gate: str = setting("stg", "Gate family (docs/design.md, 'Method').", choices=GATE_NAMES)
    sigma: float | None = setting(
        None,
        "Noise σ of stg gates [0.25 for the default sharpened unstructured gates; 0.5 otherwise].",
    )
    sigma_final: float | None = setting(
        None,
        "Anneal stg's σ along a cosine from --sigma to this value (from --sigma-start on), so "
        "the relaxed network ends close to the binary one it becomes (docs/search.md, 'Dead "
        "gates'). Default: 0.1 for the default sharpened gates; σ constant otherwise.",
    )
    sigma_start: float | None = setting(
        None,
        "Fraction of training to wait before --sigma-final starts annealing σ [0.35 for the "
        "default sharpened gates, with the sharpening; 0 otherwise].",
    )
    gate_bound: float | None = setting(
        None,
        "Keep every stg mean μ within τ ± K·σ (σ before annealing) after each optimizer step, "
        "so no gate is driven so far below the threshold that it can never reopen "
        "(docs/search.md, 'Dead gates'); --budget shift then moves the whole band by its "
        "offset. 0: unbounded. [3 for the default sharpened gates; 0 otherwise]",
    )
    temperature_final: float | None = setting(
        None,
        "Sharpen stg gates along a cosine from t = 1 to this value over the run: "
        "z = clip(τ + (μ − τ + ε)/t, 0, 1), so the relaxed network converges to the binary one "
        "it becomes (docs/search.md, 'Sharpening'). The mask μ > τ does not depend on t. "
        "Default for stg gates: 0.05; 1 keeps t = 1 (the paper's gate).",
    )
    sparsity_ramp: float = setting(
        0.35,
        "Fraction of training over which --target-sparsity's target density ramps (cubic) from "
        "the initial density down to 1 - target (docs/search.md, 'Sparsity control').",
    )
    sharpen_start: float | None = setting(
        None,
        "Fraction of training to wait before --temperature-final starts sharpening, so gates "
        "stay soft while the sparsity ramp still moves the density [0.35, where the ramp ends, "
        "for the default sharpened gates; 0.5 otherwise].",
    )
    windup_reset: bool | None = setting(
        None,
        "--target-sparsity: drop the controller's integral once, when the density first "
        "crosses the final target after the ramp; the push it built up chasing the moving "
        "target otherwise overshoots and freezes (MNIST at 99%: 88.4% without, 96.1% with; "
        "docs/search.md, 'Windup') [on for the default sharpened gates; off otherwise].",
    )
    budget: str | None = setting(
        None,
        "How gates meet --target-sparsity. shift: after every control step, move all gate "
        "means by one common offset so that exactly the scheduled count lies above the "
        "threshold (the schedule ramps from dense to the target), with no penalty; the mask "
        "then always has the asked-for size, as edge-popup's does, but which gates are open is "
        "learned through the relaxed network and chosen across all layers. penalty: the "
        "expected-L0 penalty, its λ steered by a controller (the paper's method). [shift for "
        "the default sharpened unstructured stg gates; penalty otherwise] (docs/search.md, "
        "'The budget held by a shift')",
        choices=BUDGETS,
    )
    exact_target: bool = setting(
        False,
        "Gates with --target-sparsity: after the last step, move the gates nearest the "
        "threshold so the mask keeps exactly round((1 - s) * n) weights, as edge-popup does "
        "(unstructured gates only). Off by default: on MNIST at 98% it cost 0.9 points, the "
        "gates it opens were closed for a reason (docs/search.md, 'Sharpening').",
    )
    noise: str = setting(
        "table",
        "stg noise: windows of a shared N(0,1) table (fast) or fresh draws every step.",
        choices=("table", "fresh"),
    )
    compile: bool | None = setting(
        None,
        "Fuse the stg gate maths into compiled kernels (torch.compile; a one-time compile of "
        f"~15 s, cached). Default: on for runs of {COMPILE_MIN_STEPS:,} steps or more. Same "
        "maths either way.",
    )
    loss_temperature: str = setting(
        "auto",
        "Scale logits inside the loss by a learned scalar (changes no prediction; compensates "
        "the shrinking of masked, bias-free networks). auto: learned for gates and edge-popup, "
        "none for dense.",
        choices=("auto", "none", "learned"),
    )
    gate_init: float | None = setting(
        None,
        "Initial μ (stg, default 0.5; 1.0 measured better for targets of 0.7 and below) or "
        "log α (hard-concrete, default 2.0).",
    )
    threshold: float = setting(0.5, "τ: a weight is kept when its deterministic gate ẑ > τ.")
    granularity: str = setting(
        "unstructured",
        "unstructured: a gate per weight. 2:4: a gate per weight, at most 2 kept in every group "
        "of 4 consecutive input channels (sparse tensor cores, TensorRT); layers whose input "
        "channels are not a multiple of 4 stay unstructured. channel: a gate per output channel "
        "/ neuron / MLP hidden unit (the classifier keeps a gate per weight); export removes "
        "closed channels and the network becomes a smaller dense one (channels joined by a "
        "residual addition stay ungated). channel+unstructured: both, a gate per weight "
        "everywhere too.",
        choices=GRANULARITIES,
    )
    cost: str = setting(
        "weights",
        "Gates: --target-sparsity is the fraction of weights (or of multiply-adds) removed; "
        "each gate's penalty weighs what it removes. With flops a convolution's weight counts "
        "once per output pixel, so gates prune where compute is (docs/search.md, 'Accuracy "
        "against deployed cost').",
        choices=COSTS,
    )
    target_scope: str = setting(
        "all",
        "Channel gates: which removals --target-sparsity counts. all: every zero weight. "
        "structure: only what the shrunk dense network drops (channels, neurons, heads, "
        "inputs); with channel+unstructured the per-weight gates then carry no penalty and "
        "keep, inside the kept channels, the weights that help (LeNet MNIST, 77% of the "
        "network removed: 85.6% with channel, 96.8% with channel+unstructured; "
        "docs/structured.md).",
        choices=TARGET_SCOPES,
    )
    init: str | None = setting(
        None,
        "Frozen weight scheme [default: the method's best: signed-constant for edge-popup and "
        "sharpened unstructured stg gates, uniform for other gates, kaiming-normal for dense].",
        choices=INIT_SCHEMES,
    )
    init_gain: float | None = setting(None, "Gain of the weight scale gain/√fan_in [√2].")
    scale_fan: bool | None = setting(
        None,
        "Scale weights by 1/√(1 − target sparsity) so masked layers keep unit-scale "
        "activations (edge-popup's scale_fan) [default: the method's best].",
    )
    target_sparsity: float | None = setting(
        None, "Fraction of gated weights to remove, in (0, 1); λ is steered to reach it."
    )
    l0: float | None = setting(None, "Fix λ of the expected-L0 penalty instead of a target.")
    controller_rate: float = setting(0.01, cli=False)
    epochs: int = setting(15)
    batch_size: int = setting(128)
    optimizer: str | None = setting(
        None, "[default: adam for gates, sgd for edge-popup and dense]", choices=OPTIMIZERS
    )
    lr: float | None = setting(
        None,
        "Learning rate [default: the method's best: edge-popup 0.1, dense 0.001; gates 0.03 "
        "for sharpened unstructured stg gates, hard-concrete 0.03, other gates 0.01; "
        "docs/search.md, 'Defaults'; with --budget penalty, 0.04 measured better for MLP "
        "gates at 98% and sparser].",
    )
    momentum: float | None = setting(None, "SGD momentum [0.9].")
    weight_decay: float | None = setting(
        None, "Weight decay of scores/weights [1e-4]; gates always use 0."
    )
    schedule: str = setting("cosine", choices=("cosine", "constant"))
    seed: int = setting(0, "Seed of the frozen weights, the gate noise and the data order.")
    device: str = setting("auto", choices=DEVICES)
    amp: bool = setting(True, "bf16 autocast on CUDA (ignored on CPU).")
    channels_last: bool = setting(
        False,
        "CUDA: convolution weights and inputs in channels-last (NHWC) memory format, which "
        "tensor-core convolutions prefer (ignored on CPU; bench/architectures.py).",
    )
    learn_bias: bool = setting(
        False, "Learn biases too (then the result is no longer a pure strong ticket)."
    )
    affine_bn: bool = setting(
        False, "Learn BatchNorm scale and shift (then no longer a pure strong ticket)."
    )
    eval_batch_size: int = setting(1000, cli=False)
    on_nan: str = setting(
        "stop",
        "A NaN/Inf loss or gradient: stop (the last good checkpoint is kept) or skip that "
        "batch (counted in the summary). NaN in the gates themselves always stops.",
        choices=ON_NAN,
    )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        if not isinstance(data, dict):
            raise SltError("search settings must be a table of key = value")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise SltError(f"unknown search setting(s): {', '.join(unknown)}")
        for name, value in data.items():
            if not _has_type(value, types[name]):
                raise SltError(
                    f"search setting {name}: expected {types[name]}, got {value!r}"[:200]
                )
        return cls(**data)

    @staticmethod
    def recorded_key(saved: dict) -> dict:
        """A replay key recorded by an earlier version, completed with the value each setting
        added since then had in effect before it existed (ADDED_SETTINGS), so a run checkpointed
        before an upgrade resumes when the same settings are given."""
        return {**{k: v for k, v in ADDED_SETTINGS.items() if k not in saved}, **saved}

    def replay_key(self) -> dict:
        """The settings that must match for a checkpoint to be resumed (all that can change
        the result: not what happens on a NaN, which a resumed run may choose anew)."""
        key = self.to_dict()
        key.pop("on_nan")
        return key

    @property
    def shift_applies(self) -> bool:
        """Whether `--budget shift` can hold this search's target: a count of unstructured stg
        gates (validate() refuses it elsewhere; defaults.default_budget picks it only here)."""
        return (
            self.method == "gates"
            and self.gate == "stg"
            and self.granularity == "unstructured"
            and self.target_sparsity is not None
            and self.cost == "weights"
        )

    def validate(self) -> SearchConfig:
        for f in fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value is not None and value not in choices:
                flag = "--" + f.name.replace("_", "-")
                raise SltError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
        if self.target_sparsity is not None and not 0.0 < self.target_sparsity < 1.0:
            raise SltError(f"--target-sparsity must lie in (0, 1), got {self.target_sparsity}")
        if self.target_sparsity is not None and self.l0 is not None:
            raise SltError("give --target-sparsity or --l0, not both")
        if self.method == "edge-popup" and self.target_sparsity is None:
            raise SltError("edge-popup needs --target-sparsity (the fraction of weights removed)")
        if self.l0 is not None and self.l0 < 0:
            raise SltError("--l0 must be >= 0")
        if self.granularity == "2:4" and self.method != "gates":
            raise SltError("--granularity 2:4 is a gates search (edge-popup has no 2:4 variant)")
        if (
            self.granularity == "2:4"
            and self.target_sparsity is not None
            and self.target_sparsity < 0.5
        ):
            raise SltError(
                "--granularity 2:4 removes at least half of the weights: "
                "--target-sparsity must be >= 0.5"
            )
        if self.granularity.startswith("channel") and self.method != "gates":
            raise SltError(f"--granularity {self.granularity} is a gates search")
        if self.cost != "weights" and (self.method != "gates" or self.granularity == "2:4"):
            raise SltError(
                "--cost flops weighs gates (unstructured or channel): not edge-popup, dense or 2:4"
            )
        if self.target_scope != "all" and not self.granularity.startswith("channel"):
            raise SltError(
                "--target-scope structure counts removed channels: use it with "
                "--granularity channel or channel+unstructured"
            )
        if not 0.0 < self.threshold < 1.0:
            raise SltError("--threshold must lie in (0, 1)")
        if self.sigma is not None and self.sigma <= 0:
            raise SltError("--sigma must be > 0")
        if self.sigma_final is not None:
            if self.sigma_final <= 0:
                raise SltError("--sigma-final must be > 0")
            if self.method != "gates" or self.gate != "stg":
                raise SltError("--sigma-final anneals the noise of stg gates (--method gates)")
        if self.temperature_final is not None:
            if not 0.0 < self.temperature_final <= 1.0:
                raise SltError("--temperature-final must lie in (0, 1]")
            if self.method != "gates" or self.gate != "stg":
                raise SltError("--temperature-final sharpens stg gates (--method gates)")
        if not 0.0 < self.sparsity_ramp <= 1.0:
            raise SltError("--sparsity-ramp must lie in (0, 1]")
        if self.sharpen_start is not None and not 0.0 <= self.sharpen_start < 1.0:
            raise SltError("--sharpen-start must lie in [0, 1)")
        if self.gate_bound is not None:
            if self.gate_bound < 0:
                raise SltError("--gate-bound must be >= 0 (0: unbounded)")
            if self.gate_bound > 0 and (self.method != "gates" or self.gate != "stg"):
                raise SltError("--gate-bound bounds the means of stg gates (--method gates)")
        if self.budget == "shift" and not self.shift_applies:
            raise SltError(
                "--budget shift holds the --target-sparsity of unstructured stg gates, counted "
                "in weights (--method gates --gate stg --granularity unstructured --cost "
                "weights); use --budget penalty"
            )
        if self.sigma_start is not None and not 0.0 <= self.sigma_start < 1.0:
            raise SltError("--sigma-start must lie in [0, 1)")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise SltError(f"--{name.replace('_', '-')} must be >= 1")
        if self.val_seed < 0:
            raise SltError("--val-seed must be >= 0")
        if self.val_split is None and self.val_seed != 1:
            raise SltError(
                "--val-seed picks the images --val-split holds out: give --val-split too"
            )
        for name in ("subset", "max_steps", "val_split"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SltError(f"--{name.replace('_', '-')} must be >= 1")
        return self


def load_recipe(path: str | Path) -> dict:
    """A TOML recipe: top-level keys are SearchConfig fields ([model_kwargs] a table)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SltError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SltError(f"recipe {path} is not valid TOML: {exc}") from None
    SearchConfig.from_dict(data)  # rejects unknown keys early
    return data
