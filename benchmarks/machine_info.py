"""What every benchmark figure is printed beside: CPU model, vector flags, cores, load, library versions.

Figures from hosts of one machine kind differ (an AVX2-only host runs MindSpore's CPU kernels
far slower than an AVX-512 one), so each JSON report carries this record.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata

VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "amx_int8")
LIBRARIES = ("mindspore", "torch", "transformers", "numpy", "apache-beam", "mindnlp")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def vector_isa(flags: set[str]) -> str:
    """The widest x86 vector extension: 'AMX', 'AVX-512', 'AVX2', 'AVX' or 'none/unknown'."""
    if "amx_tile" in flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    if "avx" in flags:
        return "AVX"
    return "none/unknown"


def machine_info() -> dict:
    model, flags = _cpuinfo()
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": model,
        "vector_isa": vector_isa(flags),
        "vector_flags": {flag: flag in flags for flag in VECTOR_FLAGS},
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "load_average_1_5_15": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": versions,
    }
