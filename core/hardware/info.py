"""What Hearth knows about the machine: plain dataclasses that turn into JSON with ``to_dict()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GPU:
    """One graphics device and its memory as the driver reports it."""

    index: int
    name: str
    vendor: str  # "nvidia", "amd", "apple"
    total_bytes: int
    free_bytes: int
    unified: bool = False  # shares system RAM (Apple Silicon): weights on it also use RAM
    driver: str | None = None
    source: str = ""  # where the numbers came from: "nvml", "sysfs", "sysctl", "llama.cpp"
    pci: str = ""  # PCI address, "0000:01:00.0" (ggml's device_id), where the driver says it
    backend: str = ""  # the llama.cpp backend that runs models on it: "CUDA", "Vulkan", "Metal"; "" = none
    device: str = ""  # llama.cpp's name for it: "CUDA0", "Vulkan0", "Metal"
    also: list[str] = field(default_factory=list)  # the same GPU under other backends, not counted twice

    @property
    def where(self) -> str:
        """The GPU as the chat's stats name it: "Vulkan0: Radeon 780M" (or just its name)."""
        return f"{self.device}: {self.name}" if self.device else self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CPUInfo:
    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    features: list[str] = field(default_factory=list)  # upper-case: AVX2, AVX512F, FMA, NEON …

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LlamaDevice:
    """One device llama.cpp's backend registry lists (``ggml_backend_dev_*``)."""

    name: str  # "CPU", "CUDA0", "Metal", "Vulkan0" …
    description: str
    kind: str  # "cpu", "gpu", "igpu", "accel"
    free_bytes: int
    total_bytes: int
    backend: str = ""  # its backend's registry name: "CPU", "CUDA", "Vulkan", "Metal", "RPC"
    device_id: str = ""  # the PCI address for PCI devices ("0000:c1:00.0"), else ""
    duplicate_of: str = ""  # the device another backend already lists for the same GPU (llama.cpp skips this one)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LlamaBackends:
    """What the installed llama.cpp can run on."""

    available: bool  # llama_cpp could be imported and asked
    gpu_offload: bool = False  # llama_supports_gpu_offload()
    backends: list[str] = field(default_factory=list)  # registry names: "CPU", "CUDA", "Metal", "Vulkan"
    devices: list[LlamaDevice] = field(default_factory=list)
    system_info: str = ""  # llama_print_system_info()
    error: str | None = None
    cpu_variant: str = ""  # the CPU backend ggml picked for this CPU ("haswell"); "" when built in
    cpu_variants: list[str] = field(default_factory=list)  # every CPU variant the build carries
    gpu_off: bool = False  # the user turned the GPU off (HEARTH_GPU=off): no GPU backend was loaded
    no_gpu_device: bool = False  # no GPU device node here: the GPU backends were not loaded (nothing to find)
    gpu_crash: str = ""  # the signal a GPU driver crashed the first probe with ("SIGSEGV"); asked again without

    @property
    def cpu_backend(self) -> str:
        """The CPU backend in words: "haswell (picked from 14 variants)", or "built in"."""
        if not self.cpu_variant:
            return "built in"
        return f"{self.cpu_variant} (picked for this CPU from {len(self.cpu_variants)} variants)"

    @property
    def cpu_flags(self) -> dict[str, bool]:
        """The ``NAME = 1`` switches of the CPU line of the system info (AVX2, AMX_INT8, REPACK …)."""
        flags: dict[str, bool] = {}
        for part in self.system_info.replace("CPU :", "|").split("|"):
            if "=" in part:
                key, _, value = part.partition("=")
                flags[key.strip()] = value.strip() == "1"
        return flags

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_flags"] = self.cpu_flags
        return data


@dataclass(frozen=True)
class Hardware:
    """RAM, CPU, GPUs and llama.cpp's backends; ``notes`` says what could not be detected and why."""

    ram_total_bytes: int
    ram_available_bytes: int
    cpu: CPUInfo
    gpus: list[GPU]
    llama: LlamaBackends
    os: str
    notes: list[str] = field(default_factory=list)

    @property
    def usable_gpus(self) -> list[GPU]:
        """GPUs the installed llama.cpp can offload to (none when it was built for the CPU only): those with a
        backend; where no GPU names one (hardware described by hand), every GPU."""
        if not self.llama.gpu_offload:
            return []
        with_backend = [g for g in self.gpus if g.backend]
        return with_backend or list(self.gpus)

    @property
    def runs_on(self) -> str:
        """Where Hearth runs models here, in a few words: "Vulkan0: AMD Radeon 780M (as many layers as fit...)",
        or "the CPU"."""
        gpus = self.usable_gpus
        if not gpus:
            if self.llama.gpu_crash:
                return "the CPU (a GPU driver crashed when asked)"
            return "the CPU" + (" (the GPU is turned off)" if self.llama.gpu_off else "")
        return " + ".join(g.where for g in gpus) + " (as many layers as fit; the rest on the CPU)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "os": self.os,
            "ram_total_bytes": self.ram_total_bytes,
            "ram_available_bytes": self.ram_available_bytes,
            "cpu": self.cpu.to_dict(),
            "gpus": [g.to_dict() for g in self.gpus],
            "llama": self.llama.to_dict(),
            "notes": list(self.notes),
            "runs_on": self.runs_on,
        }
