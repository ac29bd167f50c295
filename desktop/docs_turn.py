"""Reading a chat message that carries retrieved passages back into the question and its sources.

A question asked with "Use my documents" is stored as the message the model saw
(``core.docs.question_with_context``: the instructions, the numbered passages, then the question), the
same as ``hearth chat --docs`` stores it. The window shows the question alone and lists the passages
as sources under the answer; both come from the stored text, so a reopened chat shows them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.docs.context import INSTRUCTIONS

_PREFIX = f"{INSTRUCTIONS}\n\nPassages:\n\n"
_QUESTION = "\n\nQuestion: "
# "[3] notes.md, page 2, lines 4–19": a file name ends in its suffix; the location follows.
_HEADER = re.compile(r"^\[(\d+)\] (.+?\.[A-Za-z0-9]{1,5}), (.+)$")


@dataclass(frozen=True)
class Source:
    """One numbered passage the answer was given: its number, file name, location and text."""

    number: int
    file: str
    location: str
    text: str

    @property
    def label(self) -> str:
        return f"[{self.number}] {self.file} · {self.location}"


@dataclass(frozen=True)
class DocsMessage:
    question: str
    sources: list[Source]


def read_docs_message(content: str) -> DocsMessage | None:
    """The question and sources of a message sent with passages; None for an ordinary message."""
    if not content.startswith(_PREFIX):
        return None
    cut = content.rfind(_QUESTION)
    if cut < len(_PREFIX) - 2:
        return None
    question = content[cut + len(_QUESTION):]
    body = content[len(_PREFIX):cut]
    sources: list[Source] = []
    current: tuple[int, str, str] | None = None
    lines: list[str] = []
    for block_line in body.split("\n"):
        match = _HEADER.match(block_line)
        expected = len(sources) + (2 if current else 1)
        # A header opens a passage only when it carries the next number and follows a blank line.
        if match and int(match.group(1)) == expected and (current is None or not lines or lines[-1] == ""):
            if current is not None:
                sources.append(Source(current[0], current[1], current[2], "\n".join(lines).strip()))
            current, lines = (int(match.group(1)), match.group(2), match.group(3)), []
        else:
            lines.append(block_line)
    if current is not None:
        sources.append(Source(current[0], current[1], current[2], "\n".join(lines).strip()))
    return DocsMessage(question, sources)
