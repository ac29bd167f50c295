"""``response_format`` / Ollama ``format`` as a llama.cpp grammar the answer is sampled through.

The JSON Schema → GBNF conversion is llama.cpp's own (``json_schema_to_gbnf``, shipped in
llama-cpp-python); a plain JSON object uses its ``JSON_GBNF``.
"""

from __future__ import annotations

import json
from typing import Any

from core.server.errors import bad_request


def json_object_grammar() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


def json_schema_grammar(schema: Any, param: str) -> str:
    if not isinstance(schema, dict):
        raise bad_request(f"'{param}' must be a JSON Schema object.", param=param)
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare exceptions for schemas it cannot do
        raise bad_request(f"The JSON Schema in '{param}' cannot be turned into a grammar ({exc}): simplify it.",
                          param=param) from exc
