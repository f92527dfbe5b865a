"""`slt-deploy`: a thin click layer. Each command validates, calls one library function and
prints. User errors (SltError) become one line on stderr and exit code 2."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click

from slt_deploy.errors import SltError
from slt_deploy.export.formats import BACKEND_NAMES, FORMATS, format_help
from slt_deploy.search.presets import PRESETS

EXIT_USER_ERROR = 2
BACKEND_DEFAULTS = (  # eval's and bench's --backend
    "[default: by artifact type: .onnx→ort, .csr.safetensors→torch-sparse, .engine→trt, "
    "ticket/.slt→torch]"
)


class SltGroup(click.Group):
    """Turns SltError into one line and exit 2; Ctrl-C into one line and exit 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SltError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo(
                "interrupted; a search continues from its last checkpoint with --resume", err=True
            )
            ctx.exit(130)


@click.group(cls=SltGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slt-deploy")
def cli() -> None:
    """Find strong lottery tickets and export them as deployable artifacts.

    \b
    slt-deploy search   train only a binary mask over frozen random weights
    slt-deploy export   write ONNX, CSR, .slt, 2:4 or TensorRT artifacts from a ticket
    slt-deploy bench    latency, throughput and memory, dense and sparse side by side
    slt-deploy eval     accuracy of an artifact through its own runtime
    slt-deploy sweep    a grid of searches: methods x sparsities x seeds
    slt-deploy report   plots and tables of a sweep or a run (PNG, Markdown, HTML)
    slt-deploy info     show what a ticket or run directory holds
    slt-deploy doctor   which runtimes are installed, and what conflicts
    """


def _parse_kwarg(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise SltError(f"--model-arg takes KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def _config_option(f: dataclasses.Field):
    """`--field-name` for a SearchConfig field, from its type, default, help and choices
    (search/config.py, `setting`): the option and the field cannot drift apart."""
    flag = "--" + f.name.replace("_", "-")
    kinds = [k.strip() for k in f.type.split("|")]
    meta, default = f.metadata, f.default
    kwargs: dict = {"default": default, "help": meta["help"], "show_default": default is not None}
    if "bool" in kinds:
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, **kwargs)
    if meta["choices"]:
        kwargs["type"] = click.Choice(meta["choices"])
    elif meta["path"]:
        kwargs["type"] = click.Path(path_type=Path)
    else:
        kwargs["type"] = {"int": int, "float": float, "str": str}[kinds[0]]
    return click.option(flag, f.name, **kwargs)


def _search_options() -> dict:
    """`search`'s and `sweep`'s options in --help order: every SearchConfig field that has one,
    plus the few that fill `model_kwargs` or come before the config (preset, recipe)."""
    from slt_deploy.search.config import SearchConfig

    options = {
        "--preset": click.option(
            "--preset",
            type=click.Choice(PRESETS.names()),
            help="A named method, below --recipe and the options given here: paper = the "
            "paper's gates (uniform weights, no sharpening, plain cross-entropy); gates-v1 = "
            "this tool's gates before the current defaults (docs/search.md).",
        ),
        "--recipe": click.option(
            "--recipe",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML recipe of search settings; options given here override it.",
        ),
    }
    model_kwargs = {
        "--width": click.option(
            "--width", type=float, help="Width of `fc` (neurons) or width multiplier of convN."
        ),
        "--depth": click.option("--depth", type=int, help="Hidden layers of `fc`."),
        "--img-size": click.option(
            "--img-size", type=int, help="timm ViT/Swin: input size [the data set's]."
        ),
        "--patch-size": click.option(
            "--patch-size", type=int, help="timm ViT/Swin: patch size [4 or 2 at 32 px]."
        ),
        "--model-arg": click.option(
            "--model-arg",
            "model_args",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other keyword argument of the model builder (repeatable).",
        ),
    }
    for f in dataclasses.fields(SearchConfig):
        if f.metadata["cli"]:
            options["--" + f.name.replace("_", "-")] = _config_option(f)
        if f.name == "model":
            options.update(model_kwargs)
    return options


SEARCH_OPTIONS = _search_options()  # shared by `search` and `sweep`


def search_options(exclude: tuple[str, ...] = ()):
    """Apply SEARCH_OPTIONS (less `exclude`) to a command, in --help order."""

    def decorate(command):
        for flag, option in reversed(SEARCH_OPTIONS.items()):
            if flag not in exclude:
                command = option(command)
        return command

    return decorate


def _settings(
    ctx: click.Context,
    recipe: Path | None,
    width: float | None,
    depth: int | None,
    img_size: int | None,
    patch_size: int | None,
    model_args: tuple[str, ...],
    options: dict,
) -> dict:
    """SearchConfig fields: a preset, overridden by a recipe, overridden by the options given
    on the command line."""
    from slt_deploy.search.config import load_recipe

    preset = options.pop("preset", None)
    settings: dict = dict(PRESETS.get(preset)) if preset else {}
    settings.update(load_recipe(recipe) if recipe else {})
    explicit = {
        name
        for name in options
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
    }
    for name, value in options.items():
        if name in explicit or name not in settings:
            settings[name] = str(value) if isinstance(value, Path) else value
    kwargs = dict(settings.get("model_kwargs", {}))
    for key, value in map(_parse_kwarg, model_args):
        kwargs[key] = value
    if width is not None:
        kwargs["width"] = int(width) if settings["model"] == "fc" else width
    if depth is not None:
        kwargs["depth"] = depth
    for key, value in (("img_size", img_size), ("patch_size", patch_size)):
        if value is not None:
            kwargs[key] = value
    settings["model_kwargs"] = kwargs
    return settings


@cli.command()
@search_options()
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Run directory to write."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary table.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
def search(
    ctx: click.Context,
    recipe: Path | None,
    width: float | None,
    depth: int | None,
    img_size: int | None,
    patch_size: int | None,
    model_args: tuple[str, ...],
    out: Path,
    resume: bool,
    force: bool,
    quiet: bool,
    as_json: bool,
    **options,
) -> None:
    """Search a strong lottery ticket: train only a mask over frozen random weights.

    \b
    slt-deploy search --model lenet-300-100 --data mnist --data-dir DIR \\
        --target-sparsity 0.9 --epochs 15 --out runs/lenet-gates
    """
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search as run_search
    from slt_deploy.summary import print_summary

    settings = _settings(ctx, recipe, width, depth, img_size, patch_size, model_args, options)
    config = SearchConfig.from_dict(settings).validate()
    summary = run_search(config, out, resume=resume, force=force, progress=not quiet)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    elif not quiet:
        print_summary(summary, out)


@cli.command()
@search_options(exclude=("--method", "--target-sparsity", "--seed"))
@click.option(
    "--methods",
    default="gates,edge-popup,dense",
    show_default=True,
    help="Comma-separated: gates (the --gate family), gates:stg, gates:hard-concrete, "
    "edge-popup, dense (one cell per seed, no sparsity).",
)
@click.option(
    "--sparsities",
    default="0.5,0.7,0.8,0.9,0.95,0.98",
    show_default=True,
    help="Target sparsities, comma-separated.",
)
@click.option("--seeds", default="0", show_default=True, help="Seeds, comma-separated: 0,1,2.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Cells run in parallel processes; CPU threads are split between them.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Sweep directory (resumable)."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def sweep(
    ctx: click.Context,
    recipe: Path | None,
    width: float | None,
    depth: int | None,
    img_size: int | None,
    patch_size: int | None,
    model_args: tuple[str, ...],
    methods: str,
    sparsities: str,
    seeds: str,
    jobs: int,
    out: Path,
    quiet: bool,
    **options,
) -> None:
    """Run a grid of searches (methods x sparsities x seeds), one run directory per cell.

    Run it again to continue: finished cells are skipped, interrupted ones resume from their
    checkpoint. results.csv collects every finished cell; `slt-deploy report` plots it.

    \b
    slt-deploy sweep --model lenet-300-100 --data mnist --data-dir DIR \\
        --methods gates,edge-popup --sparsities 0.5,0.9,0.98 --seeds 0,1,2 --out sweeps/lenet
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from slt_deploy.search.config import SearchConfig
    from slt_deploy.sweep import grid, parse_floats, parse_methods, run_sweep, seeds_from

    base = _settings(ctx, recipe, width, depth, img_size, patch_size, model_args, options)
    cells = grid(
        parse_methods(methods, base.get("gate", "stg")),
        parse_floats(sparsities, "--sparsities"),
        seeds_from(seeds),
    )
    for cell in cells[:1]:  # the base settings fail here, once, rather than in every cell
        SearchConfig.from_dict(cell.settings(base)).validate()
    console = Console(stderr=True, quiet=quiet)
    columns = (TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("sweep", total=len(cells), info="")

        def on_cell(cell, result: dict) -> None:
            info = f"{cell.name}: {result['status']}"
            if "summary" in result:
                s = result["summary"]
                info += f" acc {100 * s['test_accuracy']:.2f}% sparsity {100 * s['sparsity']:.1f}%"
            bar.update(task, advance=1, info=info)
            if result["status"] == "failed":
                console.print(f"[red]{cell.name} failed:[/] {result['error']}")

        try:
            rows = run_sweep(base, cells, out, jobs=jobs, on_cell=on_cell)
        except BaseException:
            bar.live.transient = True  # an error is one line: take the bar away first
            raise
    click.echo(
        f"{len(rows)} finished cells in {out / 'results.csv'}; plot: slt-deploy report {out}"
    )


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Write here instead of into PATH.")
@click.option(
    "--levels",
    help="Accuracy levels for the sparsity-at-accuracy table, e.g. 0.95,0.96,0.97 "
    "[1, 2, 3 and 5 points below the best].",
)
@click.option(
    "--bench",
    "bench_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="bench --json files of the cells' artifacts (also read from PATH/bench/*.json).",
)
def report(path: Path, out: Path | None, levels: str | None, bench_files: tuple[Path, ...]) -> None:
    """Figures (PNG), results.md and a self-contained report.html for a sweep or a run.

    \b
    slt-deploy report sweeps/lenet    accuracy vs sparsity per method, seeds as error bars
    slt-deploy report runs/r18        curves over epochs, per-layer sparsity, gate histogram
    """
    from slt_deploy.report import build_report
    from slt_deploy.sweep import parse_floats

    parsed = parse_floats(levels, "--levels") if levels else None
    written = build_report(path, out, parsed, bench_files)
    click.echo(
        f"wrote {written['html']}, {written['markdown']} and {len(written['figures'])} figures"
    )


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS.names()),
    help=f"Required unless --target gives it. {format_help()}.",
)
@click.option(
    "--target",
    help="A deployment profile: format, precision, sparsity pattern and batch sizes in one "
    "(jetson-orin, x86-vnni, datacenter-gpu, or the path of your own .toml).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Artifact to write.")
@click.option("--threshold", type=float, help="Override τ: keep weights with ẑ > τ.")
@click.option(
    "--sparsity",
    type=float,
    help="Keep exactly the top (1 − s) gates by ẑ instead of thresholding (then, as always, "
    "the kept weights on dead paths leave the mask: docs/export.md, 'Dead paths').",
)
@click.option("--data", help="Data set for the parity check [the ticket's].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Its folder [the ticket's].")
@click.option("--fp16/--fp32", default=True, show_default=True, help="trt: precision.")
@click.option(
    "--int8",
    is_flag=True,
    help="trt: int8 built from the QDQ ONNX of onnx-int8 (explicit quantization, TensorRT 10 "
    "and 11).",
)
@click.option(
    "--int8-activations",
    type=click.Choice(["uint8", "int8", "dynamic"]),
    default=None,
    help="onnx-int8: activation type, scales calibrated on training images; uint8 suits x86 "
    "CPUs, int8 (symmetric) TensorRT and ARM; dynamic: scales at run time, no calibration, "
    "ONNX Runtime CPU only. [uint8; int8 for trt --int8]",
)
@click.option(
    "--calibration-samples",
    type=int,
    default=512,
    show_default=True,
    help="onnx-int8 / trt --int8: training images for the activation ranges (seeded sample).",
)
@click.option(
    "--sparse-weights/--no-sparse-weights",
    default=None,
    help="trt: TensorRT's 2:4 sparse kernels [default: on for 2:4 masks].",
)
@click.option("--max-batch", type=int, default=32, show_default=True, help="trt: largest batch.")
@click.option(
    "--workspace-mib",
    type=int,
    default=1024,
    show_default=True,
    help="trt: builder workspace limit.",
)
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    help="trt: timing cache file, read and updated (speeds up rebuilds).",
)
@click.option(
    "--shrink/--no-shrink",
    default=True,
    show_default=True,
    help="Remove units whose output is always zero (a channel ticket's closed channels; an "
    "unstructured ticket's units left empty by dead paths), so onnx, "
    "onnx-int8 and trt get a smaller dense network; --no-shrink keeps the original shapes with "
    "zeros folded in. 2:4 exports keep their shapes.",
)
@click.option(
    "--channel-multiple",
    type=int,
    default=8,
    show_default=True,
    help="Channel tickets: round kept channel counts up to a multiple of this (closed channels "
    "fill the rest; exact). CPU convolution kernels work on blocks of 8 channels.",
)
@click.option("--force", is_flag=True, help="Replace an existing artifact.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def export(
    ctx: click.Context,
    source: Path,
    fmt: str | None,
    target: str | None,
    out: Path,
    threshold: float | None,
    sparsity: float | None,
    data: str | None,
    data_dir: Path | None,
    fp16: bool,
    int8: bool,
    int8_activations: str | None,
    calibration_samples: int,
    sparse_weights: bool | None,
    max_batch: int,
    workspace_mib: int,
    timing_cache: Path | None,
    shrink: bool,
    channel_multiple: int,
    force: bool,
    as_json: bool,
) -> None:
    """Turn a run directory, ticket or .slt file into a deployable artifact.

    Writes OUT and OUT.json (bytes, sparsity, parity against PyTorch, SHA-256). Exports are
    byte-for-byte reproducible.
    """
    from slt_deploy.export import export as run_export

    profile = None
    if target:
        from slt_deploy.export.targets import load_target

        profile = load_target(target)
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("fmt", "fp16", "int8", "max_batch")
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise SltError(
                f"--target {target} sets format, precision and batch sizes; drop "
                f"{', '.join(g.replace('--fmt', '--format') for g in given)} or drop --target"
            )
        fmt, max_batch = profile.format, profile.max_batch
        fp16, int8 = profile.precision == "fp16", profile.precision == "int8"
        int8_activations = int8_activations or profile.int8_activations
        if ctx.get_parameter_source("calibration_samples") is not (
            click.core.ParameterSource.COMMANDLINE
        ):
            calibration_samples = profile.calibration_samples or calibration_samples
    if fmt is None:
        raise SltError("pass --format (or a --target profile)")
    if out.exists() and not force:
        raise SltError(f"{out} exists; pass --force to replace it")
    from slt_deploy.export.request import BuildOptions, ExportRequest, Int8Options

    activations = int8_activations or ("int8" if fmt == "trt" else "uint8")
    request = ExportRequest(
        source,
        fmt,
        out,
        threshold=threshold,
        sparsity=sparsity,
        data=data,
        data_dir=str(data_dir) if data_dir else None,
        trt=BuildOptions(
            fp16=fp16 and not int8,
            int8=int8,
            sparse=sparse_weights,
            max_batch=max_batch,
            workspace_bytes=workspace_mib << 20,
            timing_cache=timing_cache,
        ),
        shrink=shrink,
        channel_multiple=channel_multiple,
        int8=Int8Options(
            dynamic=activations == "dynamic",
            activation_type="uint8" if activations == "dynamic" else activations,
            calibration_samples=calibration_samples,
        ),
        target=profile,
    )
    report = run_export(request)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        parity = report["parity"]
        click.echo(
            f"{out}: {report['bytes']:,} bytes ({report['bytes'] / report['dense_fp32_bytes']:.3f} "
            f"of dense fp32), sparsity {100 * report['sparsity']:.2f}%, parity max|Δ| "
            f"{parity['max_abs_diff']:.2e} on {parity['samples']} inputs "
            f"({parity['inputs']})"
        )
        dead = report.get("dead_path_weights_removed", 0)
        if dead:
            click.echo(
                f"dead paths: {dead:,} kept weights led nowhere and were left out "
                f"({report['weights_kept']:,} kept; the outputs are unchanged)"
            )
        shrunk = report.get("shrunk")
        if shrunk and shrunk["applied"]:
            b, a = shrunk["before"], shrunk["after"]
            click.echo(
                f"shrunk: {b['params']:,} -> {a['params']:,} parameters "
                f"({shrunk['params_ratio']:.3f}), {b['macs']:,} -> {a['macs']:,} MACs "
                f"({shrunk['macs_ratio']:.3f})"
            )
        quantized, accuracy = report.get("int8"), report.get("accuracy") or {}
        if quantized:
            click.echo(
                f"int8 ({quantized['activations']} {quantized['activation_type']} activations): "
                f"{quantized['layers_exact']} of {quantized['layers_quantized']} weight layers "
                "exact"
            )
        if accuracy.get("accuracy_change") is not None:
            click.echo(
                f"test accuracy {100 * accuracy['artifact']:.2f}% vs fp32 "
                f"{100 * accuracy['fp32']:.2f}% ({100 * accuracy['accuracy_change']:+.2f} "
                f"points), predictions unchanged on {100 * accuracy['same_predictions']:.2f}% "
                f"of {accuracy['samples']:,} ({accuracy['data']})"
            )


@cli.command(name="eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", required=True, help="mnist, fashion-mnist, cifar10, digits, ...")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--batch-size", type=int, default=1000, show_default=True)
@click.option("--subset", type=int, help="Only the first N test samples.")
@click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES),
    help=f"The bench back-end that runs it {BACKEND_DEFAULTS}.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="cuda for the GPU back-ends (ort-trt, trt) and for ort/torch on a GPU.",
)
@click.option("--threads", type=int, help="CPU threads for torch and ONNX Runtime [all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print {accuracy, samples, ...} as JSON.")
def eval_command(
    artifact: Path,
    data: str,
    data_dir: Path | None,
    batch_size: int,
    subset: int | None,
    backend: str | None,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Test accuracy of an artifact through the back-end `bench` times it on (ONNX Runtime,
    torch.sparse CSR, PyTorch for .slt and tickets, TensorRT for engines with --device cuda)."""
    from slt_deploy.evaluate import evaluate_artifact

    result = evaluate_artifact(
        artifact,
        data,
        str(data_dir) if data_dir else None,
        batch_size,
        subset,
        backend=backend,
        device=device,
        threads=threads,
    )
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        click.echo(
            f"{artifact}: accuracy {100 * result['accuracy']:.2f}% on "
            f"{result['samples']:,} samples ({result['runtime']})"
        )


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SltError(f"--batch-size takes integers separated by commas, got {text!r}") from None
    return values


@cli.command()
@click.argument("artifacts", nargs=-1)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "jetson"]),
    default="cpu",
    show_default=True,
    help="Where to run; jetson must be the board itself (or use --remote).",
)
@click.option(
    "--backend",
    default="",
    help=f"Comma list of {', '.join(BACKEND_NAMES)} {BACKEND_DEFAULTS}.",
)
@click.option("--batch-size", "batch_sizes", default="1", show_default=True, help="E.g. 1,32.")
@click.option("--threads", type=int, help="CPU threads for torch and ONNX Runtime [all cores].")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--warmup-ms", type=float, default=200, show_default=True)
@click.option("--min-iterations", type=int, default=50, show_default=True)
@click.option("--min-seconds", type=float, default=3.0, show_default=True, help="Timed, per pair.")
@click.option("--memory/--no-memory", default=True, show_default=True, help="Peak-memory probe.")
@click.option("--compile", "use_compile", is_flag=True, help="torch back-end: torch.compile.")
@click.option("--cuda-graph", is_flag=True, help="torch/trt on CUDA: replay a CUDA graph.")
@click.option(
    "--sparse-engine/--dense-engine",
    default=None,
    help="trt: TensorRT 2:4 sparse kernels [default: on for 2:4 artifacts].",
)
@click.option("--engine-cache", type=click.Path(path_type=Path), help="Engine cache directory.")
@click.option(
    "--ort-spinning/--no-ort-spinning",
    default=None,
    help="ONNX Runtime worker spinning [default: on when only ORT pairs run; off when mixed, "
    "since it slows the runners interleaved with it].",
)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write records here.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), help="Write a CSV table here.")
@click.option("--remote", metavar="USER@HOST", help="Copy the artifacts there and bench there.")
@click.option(
    "--ssh-option",
    "ssh_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Passed to ssh/scp as -o KEY=VALUE (Port=2222, IdentityFile=...).",
)
@click.option(
    "--remote-command",
    default="slt-deploy",
    show_default=True,
    help="How to start slt-deploy on the remote host.",
)
@click.option("--quiet", is_flag=True, help="No table on the terminal.")
@click.option(
    "--request",
    "request_file",
    type=click.Path(path_type=Path),
    hidden=True,
    help="A BenchRequest as JSON, in place of ARTIFACTS and the options (what --remote sends).",
)
def bench(
    artifacts: tuple[str, ...],
    device: str,
    backend: str,
    batch_sizes: str,
    threads: int | None,
    precision: str,
    warmup_ms: float,
    min_iterations: int,
    min_seconds: float,
    memory: bool,
    use_compile: bool,
    cuda_graph: bool,
    sparse_engine: bool | None,
    engine_cache: Path | None,
    ort_spinning: bool | None,
    json_out: Path | None,
    csv_out: Path | None,
    remote: str | None,
    ssh_options: tuple[str, ...],
    remote_command: str,
    quiet: bool,
    request_file: Path | None,
) -> None:
    """Latency (mean/p50/p90/p99), throughput, peak memory, load time and size of artifacts.

    All ARTIFACTS are measured interleaved in one run and compared with the first (the
    baseline): put the dense network first.

    \b
    slt-deploy bench dense.onnx lenet.onnx lenet.csr.safetensors --batch-size 1,32
    slt-deploy bench r18.onnx r18-24.onnx --device cuda --backend ort,torch --json out.json
    slt-deploy bench r18-24.onnx --device jetson --remote nvidia@orin.local
    """
    from rich.console import Console

    from slt_deploy.bench import output
    from slt_deploy.bench.run import BenchRequest
    from slt_deploy.bench.run import bench as run_bench
    from slt_deploy.bench.runners import RunnerOptions
    from slt_deploy.bench.timing import TimingPolicy

    console = Console(stderr=True, log_path=False)
    say = (lambda _: None) if quiet else console.log
    if request_file is not None:  # what --remote sends: the request, every option in it
        if artifacts:
            raise SltError("--request holds the artifacts; give none on the command line")
        try:
            request = BenchRequest.from_dict(json.loads(request_file.read_text()))
        except (OSError, ValueError) as exc:
            raise SltError(f"--request {request_file}: {exc}") from None
    elif not artifacts:
        raise SltError("give at least one artifact to bench")
    else:
        request = BenchRequest(
            artifacts=artifacts,
            backends=tuple(b.strip() for b in backend.split(",") if b.strip()),
            batch_sizes=_int_list(batch_sizes),
            device=device,
            options=RunnerOptions(
                device="cuda" if device == "jetson" else device,
                threads=threads,
                precision=precision,
                compile=use_compile,
                cuda_graph=cuda_graph,
                sparse_engine=sparse_engine,
                engine_cache=str(engine_cache) if engine_cache else None,
            ),
            policy=TimingPolicy(warmup_ms / 1000, min_iterations, min_seconds),
            memory=memory,
            ort_spinning=ort_spinning,
        )
    if remote:
        from slt_deploy.bench.remote import run_remote

        request.validate()
        records = run_remote(remote, request, list(ssh_options), remote_command, say)
    else:
        records = run_bench(request, say)
    if json_out:
        output.write_json(json_out, records)
    if csv_out:
        output.write_csv(csv_out, records)
    if not quiet:
        wide = None if sys.stdout.isatty() else 160  # pipes and logs get every column
        Console(width=wide).print(output.table(records))
        for note in sorted(
            {n for r in records for n in r.get("notes", []) + r.get("skipped_pairs", [])}
        ):
            console.print(f"note: {note}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(path: Path, as_json: bool) -> None:
    """Show what a ticket (or a run directory's ticket) holds."""
    from slt_deploy.search.ticket import load_ticket, read_metadata, resolve_ticket_path
    from slt_deploy.summary import print_ticket_info

    ticket_path = resolve_ticket_path(path)
    load_ticket(ticket_path)  # checks the seal: a damaged ticket is not shown as if it were fine
    meta = read_metadata(ticket_path)
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True))
    else:
        print_ticket_info(ticket_path, meta)


@cli.command()
def doctor() -> None:
    """Which runtimes are installed (torch, ONNX Runtime build and providers, TensorRT,
    NVML), and any conflict, such as two ONNX Runtime builds that overwrite each other.
    Exits 2 when there is a problem."""
    from slt_deploy.runtimes import environment_report

    rows, problems = environment_report()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
    if problems:
        raise SltError("; ".join(problems))


def main() -> None:
    cli(prog_name="slt-deploy")


if __name__ == "__main__":
    sys.exit(main())
