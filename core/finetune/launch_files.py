"""The text of an exported launch: ``accelerate.yaml``, ``launch.sh`` and ``README.txt``.

Kept apart from ``core.finetune.launchers`` (which decides what to write) so each file's wording can be
read in one place. The YAML keys are those of accelerate's ``ClusterConfig``
(``accelerate/commands/config/config_args.py``); the FSDP keys those ``accelerate launch`` turns into
``FSDP_*`` variables (``accelerate/utils/launch.py``, ``prepare_multi_gpu_env``).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.finetune.resources import GB

if TYPE_CHECKING:
    from core.finetune.launchers import MemoryPlan

ASSUMED_GPUS_PER_NODE = 2  # when unknown: the fewest GPUs a 'multi-GPU' box has (the sharding estimate errs high)


def accelerate_yaml(plan: MemoryPlan, *, gpus_per_node: int | None, nodes: int, port: int) -> str:
    """The accelerate config: DDP (MULTI_GPU) or FSDP (FULL_SHARD, per decoder layer), per ``plan``."""
    processes = (gpus_per_node or ASSUMED_GPUS_PER_NODE) * nodes
    counted = "" if gpus_per_node else "  # launch.sh replaces this with the GPUs it counts x num_machines"
    lines = [
        "# accelerate config written by 'hearth finetune --export-launch' (accelerate's ClusterConfig keys).",
        f"# {plan.reasons[0] if plan.reasons else plan.strategy}.",
        "# For several machines, fill in: num_machines, main_process_ip (the address of the machine with",
        "# MACHINE_RANK=0, reachable from the others), main_process_port (a port open on it), and",
        "# num_processes (all GPUs of all machines). The same file goes to every machine; each machine's",
        "# rank is given when it starts: MACHINE_RANK=0 bash launch.sh on the main one, 1, 2, ... on the others.",
        "compute_environment: LOCAL_MACHINE",
        f"distributed_type: {'FSDP' if plan.strategy == 'fsdp' else 'MULTI_GPU'}",
        "mixed_precision: 'no'  # Hearth trains in bf16 itself where the GPU has it",
        "use_cpu: false",
        "debug: false",
        f"num_machines: {nodes}  # PLACEHOLDER: how many machines take part",
        f"num_processes: {processes}{counted or '  # all GPUs of all machines (GPUs per machine x num_machines)'}",
        "machine_rank: 0  # launch.sh passes each machine's own: MACHINE_RANK=0, 1, 2, ...",
        "main_process_ip: 127.0.0.1  # PLACEHOLDER: the main machine's address when num_machines > 1",
        f"main_process_port: {port}  # PLACEHOLDER: a free port on the main machine, open to the others",
        "rdzv_backend: static",
        "same_network: true",
        "gpu_ids: all",
        "main_training_function: main",
        "enable_cpu_affinity: false",
    ]
    if plan.strategy == "fsdp":
        wrap = (["  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
                 f"  fsdp_transformer_layer_cls_to_wrap: {plan.layer_class}  # one decoder layer per shard unit"]
                if plan.layer_class else
                ["  fsdp_auto_wrap_policy: SIZE_BASED_WRAP  # the decoder layer class was not known",
                 "  fsdp_min_num_params: 100000000"])
        lines += [
            "fsdp_config:",
            "  # FSDP2 (per-parameter sharding): the frozen 16-bit base and the trained fp32 adapter weights",
            "  # shard side by side, which FSDP1's flat parameters (one dtype each) do not allow.",
            "  fsdp_version: 2",
            "  fsdp_reshard_after_forward: true  # FULL_SHARD: weights, gradients and optimizer state sharded",
            *wrap,
            "  fsdp_state_dict_type: FULL_STATE_DICT  # gathered whole, so rank 0 saves a normal adapter",
            "  fsdp_offload_params: false",
            "  # Every rank loads the weights itself: Hearth's loader does not hand rank 0's copy to the others.",
            "  fsdp_cpu_ram_efficient_loading: false",
            f"  fsdp_activation_checkpointing: {'true' if plan.gradient_checkpointing else 'false'}",
        ]
    return "\n".join(lines) + "\n"


def launch_script(name: str, entry: Sequence[str], spec_file: str, config_file: str, *, count_gpus: bool) -> str:
    """The one command per node: ``accelerate launch`` with this folder's config, the node's rank from the
    environment (``MACHINE_RANK``, default 0), running Hearth's job module on the spec."""
    module, *args = entry
    job = " ".join(shlex.quote(a) for a in (*args, spec_file))
    count = [
        "# The GPUs of this machine (nvidia-smi), unless GPUS_PER_NODE is set: num_processes covers all machines.",
        'if [ -z "${GPUS_PER_NODE:-}" ]; then',
        '  GPUS_PER_NODE="$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)"',
        '  if [ "$GPUS_PER_NODE" = 0 ]; then',
        '    echo "nvidia-smi lists no NVIDIA GPU on this machine: install the driver, or set GPUS_PER_NODE." >&2',
        "    exit 1",
        "  fi",
        "fi",
    ] if count_gpus else []
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Hearth fine-tune {shlex.quote(name)}: run this on every machine, from this folder's copy there:",
        "#   MACHINE_RANK=0 bash launch.sh      on the main machine (main_process_ip in accelerate.yaml)",
        "#   MACHINE_RANK=1 bash launch.sh      on the second one, 2 on the third, ...",
        "# Needs Hearth with its training packages on each (README.txt). PYTHON picks the Python (default python3).",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'MACHINE_RANK="${MACHINE_RANK:-0}"',
        'PYTHON="${PYTHON:-python3}"',
        f"ARGS=(--config_file {config_file} --machine_rank \"$MACHINE_RANK\")",
        *count,
        'if [ -n "${GPUS_PER_NODE:-}" ]; then',
        f"  MACHINES=\"$(sed -n 's/^num_machines: *\\([0-9][0-9]*\\).*/\\1/p' {config_file})\"",
        '  ARGS+=(--num_processes "$((GPUS_PER_NODE * ${MACHINES:-1}))")',
        "fi",
        "# = accelerate launch ARGS -m ... : 'accelerate launch' of the same Python Hearth is installed in.",
        f'exec "$PYTHON" -m accelerate.commands.launch "${{ARGS[@]}}" -m {module} {job}',
        "",
    ])


def readme_text(name: str, plan: MemoryPlan, *, exported: dict[str, Any], gpus_per_node: int | None, nodes: int,
                hf_repo: str | None, to_copy: list[tuple[str, str]], data_bytes: int, notes: list[str]) -> str:
    """What to install on the box, what to fill in, how to run and how to bring the adapter home."""
    from core import __version__

    what = ("DDP: every GPU trains a whole copy of the model and the gradients are averaged"
            if plan.strategy == "ddp" else
            "FSDP: the model's weights and training state are sharded across the GPUs"
            + (f" one {plan.layer_class} at a time" if plan.layer_class else ""))
    gpus = f"{gpus_per_node} GPU(s) per machine" if gpus_per_node else "every GPU nvidia-smi lists on each machine"
    base_lines = ([f"The base model is the Hugging Face repo {hf_repo}. Download it on every machine first:",
                   f"    hf download {hf_repo}      (or: huggingface-cli download {hf_repo})",
                   "  Hearth finds it in the Hugging Face cache; it downloads nothing itself."]
                  if hf_repo else [])
    copy_lines = (["Copy these files into this folder on every machine (they were not copied, being large):",
                   *[f"    {src}  ->  {dst}" for src, dst in to_copy],
                   "  e.g. rsync -a FILE HOST:PATH-OF-THIS-FOLDER/models/"] if to_copy else [])
    multi = [
        "Several machines (num_machines > 1): edit accelerate.yaml first, the same on every machine:",
        "    num_machines       how many machines take part",
        "    num_processes      all GPUs of all machines (GPUs per machine x num_machines)",
        "    main_process_ip    the address of the main machine (the one started with MACHINE_RANK=0),",
        "                       reachable from the others (127.0.0.1 only works on one machine)",
        "    main_process_port  a free port on the main machine, open to the others (default 29500)",
        "  Then start launch.sh on every machine with its own MACHINE_RANK (0 on the main one, 1, 2, ...).",
    ]
    return "\n".join([
        f"Hearth fine-tune '{name}' for a multi-GPU box or several machines",
        "=" * 72,
        "",
        f"Plan: {what}. {' '.join(plan.reasons)}.",
        f"Machines: {nodes} (num_machines), {gpus}. Data copied into data/: {data_bytes / GB:.2f} GB.",
        "",
        "1. Install, on every machine (Linux with NVIDIA GPUs and drivers, Python 3.10+):",
        f"    pip install 'hearth[train]'       (Hearth {__version__}, the same version as this computer's;",
        "                                       from a checkout: pip install -e '.[train]')",
        "  This brings torch (CUDA build), transformers, peft and accelerate. The desktop installer's app",
        "  cannot start processes on several GPUs: use pip. Check with: python3 -c 'import torch; "
        "print(torch.cuda.device_count())'",
        *(["", *base_lines] if base_lines else []),
        *(["", *copy_lines] if copy_lines else []),
        "",
        "2. Copy this whole folder to every machine (spec.json, data/, accelerate.yaml, launch.sh).",
        "",
        *multi,
        "",
        "3. Run, from this folder:",
        "    MACHINE_RANK=0 bash launch.sh      on the main machine (the only one, or main_process_ip's)",
        "    MACHINE_RANK=1 bash launch.sh      on the second machine, MACHINE_RANK=2 on the third, ...",
        "  (= accelerate launch --config_file accelerate.yaml --machine_rank ${MACHINE_RANK:-0} "
        "-m core.finetune.rank spec.json)",
        "  One machine with several GPUs can also run: hearth finetune --from-spec spec.json"
        + (f" --nproc {gpus_per_node}" if gpus_per_node else " --nproc N"),
        "  Progress is printed as JSON lines by the main process; Ctrl-C stops at the next checkpoint.",
        "",
        "4. Bring the adapter home. The main machine saves it in Hearth's adapters folder there",
        f"  (python3 -c 'from core.paths import get_paths; print(get_paths().adapters)'), as {name}/.",
        "  Copy that folder to this computer and import it:",
        f"    hearth adapters import PATH/{name}",
        "  It then works like an adapter trained here: chat with it, export it to GGUF.",
        *(["", "Notes:", *[f"  - {n}" for n in notes if n not in plan.reasons]]
          if any(n not in plan.reasons for n in notes) else []),
        "",
        f"The job (spec.json): method {exported.get('method')}, base {exported.get('base')}, "
        f"data {exported.get('data') or ', '.join(exported.get('docs') or [])}.",
        "",
    ])
