"""CPU temperature, frequency and frequency governor, where the OS exposes them (Linux sysfs: Raspberry Pi,
Jetson, Android shells, most laptops; not in most containers and VMs, not on macOS). Each reader returns
None when nothing is readable, and callers print NOT_EXPOSED. No third-party imports."""
from __future__ import annotations

import glob
from pathlib import Path

THERMAL = "/sys/class/thermal/thermal_zone*"
CPUFREQ = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq"
NOT_EXPOSED = "not exposed"
# thermal zone types that measure the CPU (x86 package, Raspberry Pi, Arm SoCs, Android)
CPU_ZONES = ("x86_pkg_temp", "cpu", "soc", "tsens", "coretemp", "k10temp", "acpitz")


def _read(path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, ValueError):
        return None


def temperature_c(root: str = THERMAL) -> float | None:
    """The hottest CPU thermal zone in degrees C (any zone when none is typed as a CPU)."""
    cpu, other = [], []
    for zone in sorted(glob.glob(root)):
        raw = _read(f"{zone}/temp")
        if raw is None or not raw.lstrip("-").isdigit():
            continue
        value = int(raw) / 1000 if abs(int(raw)) > 200 else float(raw)  # millidegrees (some drivers: degrees)
        kind = (_read(f"{zone}/type") or "").lower()
        (cpu if any(k in kind for k in CPU_ZONES) else other).append(value)
    values = cpu or other
    return max(values) if values else None


def frequency_mhz(root: str = CPUFREQ) -> float | None:
    """Mean current frequency of the online cores in MHz (scaling_cur_freq is in kHz)."""
    values = [int(raw) / 1000 for d in sorted(glob.glob(root))
              if (raw := _read(f"{d}/scaling_cur_freq")) and raw.isdigit()]
    return sum(values) / len(values) if values else None


def governor(root: str = CPUFREQ) -> str | None:
    """The cpufreq governor(s), e.g. 'ondemand' or 'performance' ('a/b' when cores differ)."""
    found = sorted({g for d in glob.glob(root) if (g := _read(f"{d}/scaling_governor"))})
    return "/".join(found) if found else None


def reading() -> dict:
    return {"temp_c": temperature_c(), "freq_mhz": frequency_mhz()}
