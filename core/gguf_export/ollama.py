"""An Ollama Modelfile beside an exported GGUF (https://github.com/ollama/ollama/blob/main/docs/modelfile.md).

``FROM`` the GGUF, a ``TEMPLATE`` in Ollama's Go template syntax for the model's chat family
(the family is recognised from the GGUF's Jinja chat template markers or its architecture, as
``core.engine.templates`` does), and one ``PARAMETER stop`` per end-of-turn marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.engine.templates import FAMILY_MARKERS, FAMILY_STOPS
from core.errors import ExportError
from core.paths import write_text_atomic

# Go templates equivalent to core.engine.templates.FAMILY_TEMPLATES (Ollama's .Messages form).
GO_TEMPLATES: dict[str, str] = {
    "gemma": (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        "{{- if or (eq .Role \"user\") (eq .Role \"system\") }}<start_of_turn>user\n"
        "{{ .Content }}<end_of_turn>\n"
        "{{ if $last }}<start_of_turn>model\n{{ end }}\n"
        "{{- else if eq .Role \"assistant\" }}<start_of_turn>model\n"
        "{{ .Content }}{{ if not $last }}<end_of_turn>\n{{ end }}\n"
        "{{- end }}\n{{- end }}"
    ),
    "llama3": (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ if and $last (ne .Role \"assistant\") }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}\n"
        "{{- end }}"
    ),
    "chatml": (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ if and $last (ne .Role \"assistant\") }}<|im_start|>assistant\n{{ end }}\n"
        "{{- end }}"
    ),
    "phi3": (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n"
        "{{ if and $last (ne .Role \"assistant\") }}<|assistant|>\n{{ end }}\n"
        "{{- end }}"
    ),
    "mistral": (
        "{{- range $i, $_ := .Messages }}\n"
        "{{- if eq .Role \"user\" }}[INST] {{ .Content }} [/INST]\n"
        "{{- else if eq .Role \"assistant\" }}{{ .Content }}</s>\n"
        "{{- end }}\n{{- end }}"
    ),
}


@dataclass(frozen=True)
class OllamaExport:
    modelfile: Path
    family: str
    stops: list[str]


def detect_family(architecture: str, chat_template: str | None) -> str | None:
    """The chat family of a model: from its Jinja template's markers, else its architecture."""
    if chat_template:
        for marker, family in FAMILY_MARKERS:
            if marker in chat_template:
                return family
    if architecture.startswith("gemma"):
        return "gemma"
    return None


def modelfile_text(source: str, family: str) -> str:
    stops = FAMILY_STOPS.get(family) or []
    lines = [f"FROM {source}", "", f'TEMPLATE """{GO_TEMPLATES[family]}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines).rstrip() + "\n"


def write_modelfile(model: str | Path, out: str | Path | None = None) -> OllamaExport:
    """Write ``<model>.Modelfile`` beside a GGUF model (library name or path) for ``ollama create``.

    Named after the model so that models sharing a folder (the library's) each keep their own.
    """
    from core.library import Library
    from core.library.gguf_meta import read_gguf_info

    gguf_path = Path(Library().get(str(model)).path)
    info = read_gguf_info(gguf_path)
    family = detect_family(info.architecture, info.chat_template)
    if family is None:
        raise ExportError(
            f"{gguf_path.name} has no chat template of a family Hearth knows (Gemma, Llama 3, ChatML, "
            "Phi-3, Mistral): Ollama would not know how to format a chat. Add a chat template first."
        )
    path = Path(out) if out else gguf_path.with_suffix(".Modelfile")
    # FROM is relative when the Modelfile sits beside the model (the folder can be moved as a whole).
    source = f"./{gguf_path.name}" if path.parent.resolve() == gguf_path.parent.resolve() else str(gguf_path.resolve())
    write_text_atomic(path, modelfile_text(source, family))
    return OllamaExport(path, family, list(FAMILY_STOPS.get(family) or []))
