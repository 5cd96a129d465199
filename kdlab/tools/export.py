"""``kdlab export``: write a trained student alone, as a file that loads without kdlab.

    kdlab export --ckpt runs/x/checkpoints/best.ckpt --format onnx --output student.onnx

The student is rebuilt from the checkpoint alone: ``kdlab fit`` stores the resolved config,
whose ``student`` entry (``class_path`` / ``init_args``) names the architecture; its weights
are the checkpoint's ``student.*`` entries. A checkpoint of a module built in Python has no
such entry: pass ``--student`` then.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from kdlab.callbacks.ema import EMA_KEY, EVALUATED_KEY
from kdlab.models._weights import read_object

FORMATS = ("safetensors", "torchscript", "onnx")
WEIGHTS = ("auto", "student", "ema")
# Optional packages each format needs: (module to import, pip package).
_NEEDS = {
    "safetensors": [("safetensors", "safetensors")],
    "onnx": [("onnx", "onnx"), ("onnxscript", "onnxscript")],
}


class ExportError(RuntimeError):
    """The checkpoint, the student config or the environment does not allow the export."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kdlab export``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.ckpt)  # read once: for the export and for what it says
        path = export(
            checkpoint, args.format, args.output, args.student, args.input_shape, args.opset, args.weights
        )
        which = chosen_weights(checkpoint, args.weights)
    except ExportError as error:
        print(f"kdlab export: error: {error}", file=sys.stderr)
        return 1
    print(f"kdlab export: wrote {args.format} student ({which} weights) to {path}")
    return 0


def export(
    ckpt: str | Path | dict[str, Any],
    format: str,
    output: str | Path,
    student: str | dict | None = None,
    input_shape: tuple[int, ...] | None = None,
    opset: int | None = None,
    weights: str = "auto",
) -> Path:
    """Rebuild the student of ``ckpt`` and write it to ``output`` as ``format``.

    Args:
        ckpt: A kdlab/Lightning checkpoint, or its content as :func:`load_checkpoint` read it.
        format: ``safetensors``, ``torchscript`` or ``onnx``.
        output: The file to write.
        student: Architecture override: a class path, or a YAML/JSON mapping with
            ``class_path`` and ``init_args`` (string or dict); None reads it from ``ckpt``.
        input_shape: Shape of one input (``C,H,W``) for tracing; None reads the datamodule's.
        opset: ONNX opset version; None for the exporter's default.
        weights: ``student`` (the trained weights), ``ema`` (the average kept by
            :class:`~kdlab.callbacks.StudentEMA`) or ``auto``: the ones the run validated.

    Raises:
        ExportError: unreadable checkpoint, no usable student config, weights that do not fit,
            or a missing optional dependency of ``format``.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    _require(format)
    checkpoint = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    config = student_config(checkpoint, student)
    model = build_student(config, checkpoint, chosen_weights(checkpoint, weights))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if format == "safetensors":
        _write_safetensors(model, config, output)
        return output
    example = torch.zeros(2, *(input_shape or checkpoint_input_shape(checkpoint)))
    _check_runs(model, example)
    try:
        if format == "torchscript":
            _write_torchscript(model, example, output)
        else:
            _write_onnx(model, example, output, opset)
    except Exception as error:  # an operator the format cannot express, a shape that does not fit
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"{format} export of {config['class_path']} for inputs of shape {tuple(example.shape[1:])} "
            f"failed: {type(error).__name__}: {detail}. Check --input-shape, or try another --format."
        ) from error
    return output


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint as plain data, read by kdlab's safe reader (no code runs)."""
    try:
        checkpoint = read_object(path)
    except FileNotFoundError:
        raise ExportError(f"no checkpoint at '{path}'") from None
    except ValueError as error:
        raise ExportError(
            f"cannot read it as a plain checkpoint: {error}. A checkpoint must hold only tensors and plain "
            "containers (kdlab's do) and be complete"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ExportError(f"'{path}' is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def student_config(checkpoint: dict[str, Any], override: str | dict | None = None) -> dict[str, Any]:
    """The student's ``{"class_path": ..., "init_args": {...}}``, from ``override`` or the checkpoint."""
    if override is not None:
        config = _parse_override(override)
    else:
        config = (checkpoint.get("hyper_parameters") or {}).get("student")
        if not isinstance(config, dict) or "class_path" not in config:
            raise ExportError(
                "the checkpoint does not say which student architecture it holds (the module was built "
                "in Python, not by `kdlab fit`). Pass it with --student, e.g. "
                "--student kdlab.models.cifar.resnet8x4 or "
                "--student '{class_path: kdlab.models.MLP, init_args: {hidden: [32]}}'"
            )
    return {"class_path": config["class_path"], "init_args": dict(config.get("init_args") or {})}


def chosen_weights(checkpoint: dict[str, Any], weights: str) -> str:
    """``student`` or ``ema``: which of the checkpoint's student weights ``weights`` asks for."""
    if weights not in WEIGHTS:
        raise ExportError(f"unknown weights '{weights}'; choose one of {', '.join(WEIGHTS)}")
    if weights == "ema" and EMA_KEY not in checkpoint:
        raise ExportError(
            "the checkpoint holds no averaged student weights (the run had no kdlab.callbacks.StudentEMA); "
            "export --weights student"
        )
    if weights == "auto":
        return "ema" if checkpoint.get(EVALUATED_KEY) and EMA_KEY in checkpoint else "student"
    return weights


def build_student(config: dict[str, Any], checkpoint: dict[str, Any], weights: str = "student") -> nn.Module:
    """Instantiate ``config`` and load the checkpoint's ``student.*`` weights (``weights="ema"``:
    the moving average of :class:`~kdlab.callbacks.StudentEMA`) strictly."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--student", type=nn.Module)
    try:
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
        model = instantiate(parser.parse_object({"student": config})).student
    except Exception as error:
        raise ExportError(f"cannot build the student {json.dumps(config)}: {error}") from None
    source = checkpoint[EMA_KEY] if weights == "ema" else checkpoint["state_dict"]
    state = {k[len("student.") :]: v for k, v in source.items() if k.startswith("student.")}
    if not state:
        raise ExportError("the checkpoint holds no 'student.*' weights: is it a kdlab checkpoint?")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ExportError(
            f"the checkpoint's student weights do not fit {config['class_path']} with init_args "
            f"{config['init_args']}: {str(error).splitlines()[0]} ... Check --student."
        ) from None
    return model.eval()


def checkpoint_input_shape(checkpoint: dict[str, Any]) -> tuple[int, ...]:
    """The ``input_shape`` of the datamodule the checkpoint was trained on."""
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    shape = None
    if class_path:
        module_name, _, name = class_path.rpartition(".")
        datamodule_class = getattr(importlib.import_module(module_name), name, None)
        shape = getattr(datamodule_class, "input_shape", None)
        if not isinstance(shape, (tuple, list)) and datamodule_class is not None:
            try:  # input_shape set in __init__; DataModules read no data there
                shape = getattr(datamodule_class(**hparams), "input_shape", None)
            except Exception:
                shape = None
    if not isinstance(shape, (tuple, list)):
        raise ExportError(
            "the checkpoint does not tell the input shape (its datamodule declares no input_shape); "
            "pass --input-shape C,H,W, e.g. --input-shape 3,32,32"
        )
    return tuple(int(s) for s in shape)


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model(example)
    except Exception as error:
        raise ExportError(
            f"the student does not run on inputs of shape {tuple(example.shape[1:])} "
            f"({type(error).__name__}: {str(error).strip().splitlines()[0]}); pass --input-shape C,H,W"
        ) from None


def _parse_override(text: str | dict) -> dict[str, Any]:
    config = text if isinstance(text, dict) else yaml.safe_load(text)
    if isinstance(config, str):
        config = {"class_path": config}
    if not isinstance(config, dict) or "class_path" not in config:
        raise ExportError(
            f"--student must be a class path or a mapping with class_path/init_args, got {text!r}"
        )
    return config


def _require(format: str) -> None:
    for module, package in _NEEDS.get(format, []):
        if importlib.util.find_spec(module) is None:
            raise ExportError(f"format '{format}' needs the '{module}' package: pip install {package}")


def _write_safetensors(model: nn.Module, config: dict[str, Any], output: Path) -> None:
    from safetensors.torch import save_file

    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    # The architecture travels in the header, so the file alone says how to rebuild the module.
    save_file(state, str(output), metadata={"kdlab_student": json.dumps(config)})


def _write_torchscript(model: nn.Module, example: torch.Tensor, output: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated", category=FutureWarning)
            scripted = torch.jit.script(model)
    except Exception:  # not scriptable: a trace records the operations run on the example
        scripted = torch.jit.trace(model, example)
    with torch.no_grad():  # the saved program must compute what the student computes
        torch.testing.assert_close(scripted(example), model(example))
    scripted.save(str(output))


def _write_onnx(model: nn.Module, example: torch.Tensor, output: Path, opset: int | None) -> None:
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        (example,),
        str(output),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        external_data=False,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlab export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint written by kdlab fit")
    parser.add_argument("--format", required=True, choices=FORMATS, help="file format of the student")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument(
        "--student", help="architecture when the checkpoint lacks it: a class path or a YAML/JSON mapping"
    )
    parser.add_argument(
        "--input-shape", type=_shape, help="one input's shape C,H,W (default: the datamodule's input_shape)"
    )
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="student: the trained weights; ema: StudentEMA's average; auto (default): the ones validated",
    )
    return parser


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 3,32,32, got '{text}'"
        ) from None
