"""Pick the compute device and its precision; probe free memory for tile/batch sizing.

Only device choice lives here, no training or prediction logic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from napari_unet.core.io import InputError
from napari_unet.core.presets import AUTO, DEVICES


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = AUTO) -> torch.device:
    """ "auto" -> CUDA, else MPS, else CPU; a named device must exist (`InputError` if not)."""
    if isinstance(name, torch.device):
        return name
    name = str(name).lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise InputError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if kind == AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "Device 'cuda' was asked for but this torch build sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or auto."
        )
    if kind == "mps" and not _mps_available():
        raise InputError("Device 'mps' was asked for but Apple MPS is not available here.")
    return torch.device(name)


def use_all_cpu_cores() -> int:
    """Let torch use every core (fp32 CPU training is compute bound), unless
    ``OMP_NUM_THREADS`` is set; returns the thread count.

    Also flushes denormal floats to zero: tiny values (Gaussian tails, decaying
    activations) otherwise make CPU kernels many times slower at no gain in accuracy.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        # the user chose (on a shared, loaded machine one thread per process is several
        # times faster: measured 1.3 s vs 7.9-9.9 s per step of the light model at load 9
        # on 2 cores, the threads waiting on each other)
        torch.set_flush_denormal(True)
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    torch.set_flush_denormal(True)
    return cores


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fast, no loss scaling needed); a no-op elsewhere (fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device | str) -> torch.memory_format:
    """channels_last on CUDA (tensor cores prefer NHWC), the default layout elsewhere."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def free_memory_bytes(device: torch.device | str) -> int:
    """Free memory on ``device`` in bytes (CUDA: driver's figure; CPU: available RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        if recommended is not None:
            return int(recommended() - torch.mps.current_allocated_memory())
    return _available_ram_bytes()


def _available_ram_bytes() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return 4 * 1024**3  # unknown platform: assume a modest 4 GiB


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's global RNG for a block (used by model init), restoring it afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
