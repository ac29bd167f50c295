"""llama.cpp's log, caught instead of printed: recent lines kept to explain failures, each line offered to a hook.

llama.cpp has one log callback per process (``llama_log_set``); the newest ``LlamaLog`` holds it.
llama.cpp keeps only the function pointer, and may log at any later time (a model freed, a backend
torn down), so every callback installed stays referenced for the life of the process.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable
from typing import Any

_INSTALLED: list[Any] = []  # every callback handed to llama.cpp: freeing one would leave it a dangling pointer


class LlamaLog:
    def __init__(self, on_line: Callable[[str], None] | None = None, keep: int = 60) -> None:
        import llama_cpp as L

        self.lines: deque[str] = deque(maxlen=keep)
        self.partial = ""
        self.on_line = on_line

        @L.llama_log_callback  # type: ignore[untyped-decorator]
        def callback(level: int, text: bytes, _user: Any) -> None:
            self.partial += text.decode("utf-8", errors="replace")
            while "\n" in self.partial:
                line, self.partial = self.partial.split("\n", 1)
                if line.strip():
                    self.lines.append(line)
                    if self.on_line is not None:
                        self.on_line(line)

        self.callback = callback
        _INSTALLED.append(callback)
        L.llama_log_set(self.callback, ctypes.c_void_p(0))

    def reason(self) -> str:
        """The most telling recent error line (llama.cpp logs the cause before the summary)."""
        for needles in (("error loading model",), ("unknown", "exception", "not within the file bounds"),
                        ("error", "failed")):
            for line in self.lines:
                low = line.lower()
                if any(n in low for n in needles):
                    marker = "error loading model: "
                    at = low.find(marker)
                    return line[at + len(marker):].strip() if at >= 0 else line.strip()
        return ""
