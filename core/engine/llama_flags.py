"""Model-loading flags shared by the engine and the memory measurement, so both load alike."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def use_extra_buffers() -> bool:
    """Whether llama.cpp may use its extra CPU buffer types (weight repacking, AMX).

    llama.cpp's AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on machines whose CPU
    reports AMX but whose kernel does not enable it, as in some VMs; a build compiled with AMX
    therefore loads models without the extra buffers. Hearth's build carries every CPU variant and
    ggml picks one per machine (core.engine.backends): only the AMX variant (sapphirerapids) loses
    the repacked weights, and only on CPUs that report AMX.
    """
    import llama_cpp

    from core.engine.backends import load_backends

    load_backends()  # the system info names the loaded variant's features only once it is loaded

    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    return "AMX_INT8 = 1" not in info
