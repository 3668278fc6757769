"""What machine a benchmark ran on: CPU model, cores, ISA features, OS, Python and runtime versions.

Read from /proc/cpuinfo (Linux, Android, Raspberry Pi) or sysctl (macOS). No torch, no third-party imports.
The fingerprint keys every row of `bench.csv` (runs/bench/ by default), so results from many devices share one table.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from kd2edge.bench.sensors import governor

# ISA features that decide how fast int8/fp16 CNN kernels run: cpuinfo flag -> the name we report.
ISA_FEATURES = {
    # x86
    "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16", "avx512_fp16": "AVX-512 FP16", "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
    # Arm (aarch64 "Features:" line; 32-bit Pis say "neon")
    "asimd": "NEON", "neon": "NEON", "asimdhp": "NEON FP16", "asimddp": "NEON dotprod", "i8mm": "I8MM",
    "bf16": "BF16", "sve": "SVE", "sve2": "SVE2", "sme": "SME",
}
# macOS sysctl keys for the same Arm features.
MAC_FEATURES = {
    "hw.optional.neon": "NEON", "hw.optional.arm.FEAT_FP16": "NEON FP16", "hw.optional.arm.FEAT_DotProd": "NEON dotprod",
    "hw.optional.arm.FEAT_I8MM": "I8MM", "hw.optional.arm.FEAT_BF16": "BF16", "hw.optional.arm.FEAT_SME": "SME",
    "hw.optional.avx2_0": "AVX2", "hw.optional.avx512f": "AVX-512", "hw.optional.avx512vnni": "AVX-512 VNNI",
}
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "coremltools")


def parse_cpuinfo(text: str) -> dict:
    """CPU model and ISA feature names from the text of /proc/cpuinfo (x86 `flags`, Arm `Features`)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = (fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
             or fields.get("processor") or "")
    if fields.get("cpu implementer") and not fields.get("model name"):  # Arm: name the core by its part number
        model = f"{model} (implementer {fields['cpu implementer']}, part {fields.get('cpu part', '?')})".strip()
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {"cpu": model or platform.processor() or platform.machine(), "isa": features_from_flags(flags)}


def features_from_flags(flags) -> list[str]:
    seen = []
    for flag, name in ISA_FEATURES.items():
        if flag in flags and name not in seen:
            seen.append(name)
    return seen


def _sysctl(key: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu() -> dict:
    if sys.platform == "darwin":
        isa = [name for key, name in MAC_FEATURES.items() if _sysctl(key) == "1"]
        return {"cpu": _sysctl("machdep.cpu.brand_string") or platform.processor(), "isa": list(dict.fromkeys(isa))}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    return {"cpu": platform.processor() or platform.machine(), "isa": []}


def _board() -> str:
    """Board name where the OS exposes it (Raspberry Pi, Jetson, Android through getprop)."""
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(p).read_text(errors="replace").strip("\x00 \n")
        except OSError:
            pass
    return ""


def runtime_versions() -> dict:
    """Installed versions of the packages the bench path can use (absent packages are left out)."""
    out = {}
    for name in RUNTIME_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def fingerprint() -> dict:
    """The device record: cpu, board, arch, cores, isa (list), os, python, runtimes, cpufreq governor (None
    where not readable) and a short device_id."""
    cpu = _cpu()
    info = {
        "cpu": cpu["cpu"], "board": _board(), "arch": platform.machine(), "cores": os.cpu_count() or 0,
        "isa": cpu["isa"], "os": platform.platform(terse=True), "python": platform.python_version(),
        "runtimes": runtime_versions(), "governor": governor(),
    }
    info["device_id"] = device_id(info)
    return info


def device_id(info: dict) -> str:
    """A stable short id for the hardware + OS (not the Python packages): `<arch>-<8 hex>`."""
    key = "|".join(str(info.get(k, "")) for k in ("cpu", "board", "arch", "cores", "os"))
    return f"{info.get('arch', 'cpu')}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
