"""The numerical mode of torch on the CPU, pinned before torch is imported, so training is byte-identical on CPUs.

Why: the same params trained other weights on another CPU (issue 30: sine elman's checkpoint changed on an
AVX-512 machine). Two libraries inside torch pick their code by the CPU they find, and the paths round
differently:
- Intel MKL, torch's CPU BLAS, takes an AVX-512 path on an AVX-512 CPU and an AVX2 path on another. Its
  conditional numerical reproducibility setting `MKL_CBWR=AVX2` makes it take the same path on every CPU that has
  AVX2. (Measured on an AVX-512 Xeon, sine elman: 6.3 s pinned, 6.3 s unpinned; `COMPATIBLE`, SSE2 only, 7.2 s.)
- ATen, torch's own kernels, is built for AVX2 and for AVX-512 and picks one at start-up: the two agree on elman
  but not on the GRU (its gates' elementwise kernels; sine gru 10.6 s at AVX2, 11.1 s at AVX-512), so
  `ATEN_CPU_CAPABILITY=avx2` is pinned too, where the CPU has AVX2 (forcing it on a CPU without AVX2 would stop
  torch with an illegal instruction).
Every x86-64 CPU since 2013 (Intel Haswell, AMD Zen) has AVX2; one without it (or `ATEN_CPU_CAPABILITY=default`,
or an MKL limited below AVX2) runs other code and trains other weights.

Both libraries read their variable once, when they start, so it must be in the environment before torch is
imported: `pipeline/learning/__init__.py` pins it before any module of the package imports torch, and the forked
replica processes inherit it. A value the user set is kept (their own choice of mode, e.g. `MKL_CBWR=AUTO`).
"""

import os
from pathlib import Path

MKL = ("MKL_CBWR", "AVX2")
ATEN = ("ATEN_CPU_CAPABILITY", "avx2")
CPUINFO = Path("/proc/cpuinfo")


def cpu_has_avx2(cpuinfo: Path = CPUINFO) -> bool:
    """Linux's word on it; elsewhere (no /proc) the ATen level is left to torch."""
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx2" in flags.split()


def pin(cpuinfo: Path = CPUINFO) -> None:
    """Set the pinned mode for whatever the environment does not already name."""
    os.environ.setdefault(*MKL)
    if cpu_has_avx2(cpuinfo):
        os.environ.setdefault(*ATEN)


def mode() -> str:
    """The mode in force, as the train stage reports it: `MKL_CBWR=AVX2, ATEN_CPU_CAPABILITY=avx2`."""
    return ", ".join(f"{name}={os.environ.get(name, 'auto')}" for name, _ in (MKL, ATEN))
