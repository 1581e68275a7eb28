"""Where torch runs: the device, the thread count and the seed, each decided in exactly one place."""

import torch

from pipeline.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent is an error, never a fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"params.yaml: device is '{name}' but CUDA is not available on this machine; "
                              "set device: auto or device: cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"params.yaml: device is '{name}' but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("params.yaml: device is 'mps' but MPS is not available on this machine; "
                          "set device: auto or device: cpu")
    return torch.device(name)


def configure(threads: int, seed: int | None = None) -> None:
    """Pin torch's CPU threads (0 keeps torch's default) and seed every generator torch uses.

    Tiny recurrent models gain nothing from many threads and lose a lot to contention on a busy machine,
    and two parallel queue workers must not fight over the same cores."""
    if threads > 0:
        torch.set_num_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)  # also seeds every CUDA device
