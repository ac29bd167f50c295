"""The writer model recommended for this machine: a small instruct GGUF that restates documents' facts.

Fine-tuning on documents can train on restatements of each fact written by a local instruct model
(``core.finetune.data.views.written``). The writer runs once over the fact lines, beside a training
job, so it is chosen small: the largest of a few well-known instruct models whose file takes at most
an eighth of the machine's RAM (the training job needs the rest). The sizes are the Hub files' sizes
(Q4_K_M, the balanced default of ``core.fit.recommend``); the download itself lists them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.units import human_size

RAM_SHARE = 8  # the writer's file may take 1/RAM_SHARE of the RAM


@dataclass(frozen=True)
class WriterChoice:
    """A writer model on the Hub: repo, quant and file, its name in words, and the file's size."""

    repo_id: str
    quant: str
    filename: str
    title: str
    size_bytes: int

    @property
    def label(self) -> str:
        """E.g. "Qwen2.5 1.5B Instruct Q4_K_M, 1.1 GB"."""
        return f"{self.title} {self.quant}, {human_size(self.size_bytes)}"

    @property
    def pull_name(self) -> str:
        """The ``REPO:QUANT`` name ``core.hub.plan_pull`` (and ``hearth pull``) takes."""
        return f"{self.repo_id}:{self.quant}"


# Largest first; the Qwen and Llama instruct models the knowledge issue names, and Qwen2.5 0.5B for small machines.
WRITERS = (
    WriterChoice("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "Q4_K_M", "qwen2.5-1.5b-instruct-q4_k_m.gguf",
                 "Qwen2.5 1.5B Instruct", 1_117_320_736),
    WriterChoice("bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M", "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
                 "Llama 3.2 1B Instruct", 807_690_656),
    WriterChoice("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M", "qwen2.5-0.5b-instruct-q4_k_m.gguf",
                 "Qwen2.5 0.5B Instruct", 491_400_032),
)


def recommend_writer(ram_total_bytes: int | None = None) -> WriterChoice:
    """The writer for a machine with ``ram_total_bytes`` of RAM (this machine's when None)."""
    if ram_total_bytes is None:
        from core.hardware import detect_hardware

        ram_total_bytes = detect_hardware(with_llama=False).ram_total_bytes
    for choice in WRITERS:
        if choice.size_bytes * RAM_SHARE <= ram_total_bytes:
            return choice
    return WRITERS[-1]
