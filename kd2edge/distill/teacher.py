"""Teachers for distillation: a frozen model that maps uint8 NHWC image batches to logits.

Sources (`load_teacher(spec, arch)`):
- a known name (`cifar10-resnet56`, see kd2edge.pretrained), a native kd2edge checkpoint, or a foreign state
  dict with `arch` -> `TorchTeacher` (logits, features through forward hooks, penultimate features);
- a TorchScript file -> `TorchTeacher` (logits; features only if the named submodule exists);
- a list of teachers, "a,b,c" or a named ensemble (`cifar10-ensemble` = resnet20/32/44/56) -> `EnsembleTeacher`
  (the mean of the members' logits; its cache_spec holds every member's);
- an `.onnx` file run with onnxruntime -> `OnnxTeacher` (logits only).

Every teacher is fed as its input contract says (kd2edge.input_contract, docs/TEACHERS.md): `--teacher-input`
(config `teacher_input`), else what the file records, else a stated guess; `contract_line` says which and why.
Every teacher is in eval mode with gradients off. `head` replaces the teacher's classifier with a probe
(cross-dataset adaptation, kd2edge.distill.probe). `cache_spec` holds everything that changes the teacher's
outputs (file checksum, input contract, precision, probe checksum); `cache_id` is its hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from kd2edge import Kd2EdgeError
from kd2edge.batches import normalize
from kd2edge.files import sha256
from kd2edge.input_contract import (ONNX_GUESS, key as contract_key, onnx_default, onnx_layout, onnx_record,
                                    resolve_contract, run_session)
from kd2edge.pretrained import ensemble_members, ensemble_record

FLAG = "--teacher-input"


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise Kd2EdgeError("the teacher has no nn.Linear classifier to read penultimate features from")
    return found[-1]


class Teacher:
    """What every teacher shares: its input contract and its cache identity."""
    sha256: str
    bf16: bool = False
    head = None
    torch_threads = True  # its speed follows torch.set_num_threads (False: onnxruntime keeps its own threads)
    contract: dict
    contract_line: str = ""

    @property
    def cache_spec(self) -> dict:
        """Everything that changes this teacher's outputs; add keys here (e.g. ensemble members), never beside."""
        spec = {"sha256": self.sha256, "precision": "bf16" if self.bf16 else "fp32",
                "input": contract_key(self.contract)}
        if self.head is not None:
            w = torch.cat([self.head.weight.flatten(), self.head.bias.flatten()]).detach().numpy().tobytes()
            spec["head"] = hashlib.sha256(w).hexdigest()[:16]
        return spec

    @property
    def cache_id(self) -> str:
        return hashlib.sha256(json.dumps(self.cache_spec, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def features_id(self) -> str:
        """cache_id of the teacher without its probe head (its penultimate features)."""
        spec = {k: v for k, v in self.cache_spec.items() if k != "head"}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


class TorchTeacher(Teacher):
    def __init__(self, model: nn.Module, info: dict, contract: dict, bf16: bool = False, contract_line: str = ""):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if not hasattr(self.model, "code"):  # channels-last convolutions (TorchScript modules keep their layout)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.info, self.bf16, self.head = info, bf16, None
        self.contract, self.contract_line = contract, contract_line
        self.num_classes = info["num_classes"]
        self.source = info["source"]
        self.sha256 = info["sha256"]

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def _input(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return normalize(x_uint8, self.contract)

    @torch.no_grad()
    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            with self._autocast():
                return self.model(self._input(x_uint8)).float()
        return self.head(self.penultimate(x_uint8))

    @torch.no_grad()
    def penultimate(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """The input of the last nn.Linear (pooled features), float32."""
        _, linear = last_linear(self.model)
        got = {}
        h = linear.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0]))
        try:
            with self._autocast():
                self.model(self._input(x_uint8))
        finally:
            h.remove()
        return got["x"].float()

    def set_head(self, head: nn.Linear):
        self.head = head.eval()
        self.num_classes = head.out_features


class OnnxTeacher(Teacher):
    """An .onnx teacher run by the same onnxruntime Session as the device path (kd2edge.runtimes)."""

    def __init__(self, path: Path, contract_spec=None, threads: int | None = None):
        from kd2edge.runtimes import load_session

        self.session = load_session("onnxruntime", path, threads or torch.get_num_threads())
        self.session.name = str(path)
        recorded, why, size = onnx_record(self.session)
        self.contract, self.contract_line = resolve_contract(
            contract_spec, recorded, why, onnx_default(self.session), ONNX_GUESS, FLAG, size,
            onnx_layout(self.session))
        self.source, self.sha256, self.head, self.bf16 = "onnx", sha256(path), None, False
        h, w = (self.contract.get("input_size") or [3, 32, 32])[1:]
        self.num_classes = self.logits(torch.zeros(1, h, w, 3, dtype=torch.uint8)).shape[1]
        self.info = {"path": str(path), "sha256": self.sha256, "arch": "onnx", "source": "onnx",
                     "num_classes": self.num_classes}

    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, x_uint8.numpy(), self.contract))

    def penultimate(self, x_uint8):
        raise Kd2EdgeError("an ONNX teacher gives logits only; cross-dataset adaptation and feature methods "
                           "need a PyTorch teacher (checkpoint or TorchScript)")


class EnsembleTeacher(Teacher):
    """The mean of several teachers' logits (a stronger teacher at no training cost). Members may be any
    teacher source; they must agree on the number of classes. Its cache_spec holds every member's in order,
    so changing any member changes the cache key."""

    def __init__(self, members: list):
        if len(members) < 2:
            raise Kd2EdgeError("an ensemble teacher needs at least two members")
        classes = {int(m.num_classes) for m in members}
        if len(classes) != 1:
            raise Kd2EdgeError(f"ensemble members disagree on the number of classes: {sorted(classes)}")
        self.members, self.head, self.source = members, None, "ensemble"
        self.num_classes = classes.pop()
        self.bf16 = any(getattr(m, "bf16", False) for m in members)
        path, self.sha256 = ensemble_record([m.info["path"] for m in members], [m.sha256 for m in members])
        self.contract = members[0].contract
        self.contract_line = f"ensemble of {len(members)}: " + "; ".join(m.contract_line for m in members)
        self.info = {"path": path,
                     "sha256": self.sha256, "arch": "ensemble", "source": "ensemble", "num_classes": self.num_classes,
                     "members": [{"path": str(m.info["path"]), "sha256": m.sha256, "arch": m.info.get("arch")}
                                 for m in members]}

    @property
    def cache_spec(self) -> dict:
        return {"ensemble": [m.cache_spec for m in self.members]}

    @property
    def torch_threads(self) -> bool:
        return any(m.torch_threads for m in self.members)

    @torch.no_grad()
    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.logits(x_uint8).float() for m in self.members]).mean(0)

    def penultimate(self, x_uint8):
        raise Kd2EdgeError("an ensemble teacher gives logits only; cross-dataset adaptation and feature methods "
                           "need a single PyTorch teacher")


def load_teacher(spec: str, arch: str | None = None, bf16: bool = False, contract=None):
    """A frozen teacher from a name, checkpoint, TorchScript file or ONNX file, fed as `contract` says
    (a preset name, key=value string or dict; None: what the file records, else a stated guess)."""
    from kd2edge.checkpoint import load_model
    from kd2edge.evaluate import model_contract
    from kd2edge.pretrained import PRETRAINED, resolve_checkpoint

    members = ensemble_members(spec)
    if members is not None:  # members' archs: known names or native checkpoints (a shared `arch` applies to all)
        def one(m):  # a member: a spec string, or {"teacher": spec, "arch": arch[, "input": contract]}
            if isinstance(m, dict):
                return load_teacher(m["teacher"], m.get("arch"), bf16, m.get("input", contract))
            return load_teacher(m, arch if m not in PRETRAINED else None, bf16, contract)

        return EnsembleTeacher([one(m) for m in members])
    if str(spec) not in PRETRAINED and str(spec).endswith(".onnx"):
        return OnnxTeacher(resolve_checkpoint(spec), contract)
    model, info = load_model(spec, arch)
    prep, line = model_contract(info, contract, FLAG)
    if info.get("num_classes") is None:
        h, w = (prep.get("input_size") or [3, 32, 32])[1:]
        with torch.no_grad():
            info["num_classes"] = int(model(torch.zeros(1, 3, h, w) if prep["layout"] == "NCHW"
                                            else torch.zeros(1, h, w, 3)).shape[1])
    return TorchTeacher(model, info, prep, bf16, line)
