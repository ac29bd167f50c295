"""Anthropic's Messages API request bodies (/v1/messages), as pydantic models: the fields Hearth honours.

The shapes are those of the official ``anthropic`` package's ``types/`` (``message_create_params.py``,
``message_param.py``, ``text_block_param.py``, ``image_block_param.py``, ``tool_use_block_param.py``,
``tool_result_block_param.py``, ``tool_param.py``, ``tool_choice_*_param.py``,
``message_count_tokens_params.py``). Content blocks are told apart by their ``type``, as the API
does. Unknown fields (``metadata``, ``cache_control``, ``citations``, ``thinking``...) are accepted and
ignored, as the OpenAI models here do, because clients send them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(Lenient):
    type: Literal["text"]
    text: str


class Base64ImageSource(Lenient):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlImageSource(Lenient):
    type: Literal["url"]
    url: str = Field(min_length=1)


class FileImageSource(Lenient):
    type: Literal["file"]
    file_id: str = Field(min_length=1)


class ImageBlock(Lenient):
    type: Literal["image"]
    source: Annotated[Base64ImageSource | UrlImageSource | FileImageSource, Field(discriminator="type")]


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool = False


class DocumentBlock(Lenient):
    """Accepted so that the answer can say it is not supported (rather than 'unknown block type')."""

    type: Literal["document"]


class ThinkingBlock(Lenient):
    """A previous answer's reasoning, which clients send back; Hearth leaves it out of the prompt."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | DocumentBlock | ThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(Lenient):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class InputSchema(Lenient):
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class ToolParam(Lenient):
    # Anthropic's rule for tool names: ^[a-zA-Z0-9_-]{1,64}$
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    input_schema: InputSchema
    type: Literal["custom"] | None = None


class ToolChoiceAuto(Lenient):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Lenient):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Lenient):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Lenient):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class CountTokensRequest(Lenient):
    """``POST /v1/messages/count_tokens``: the prompt part of a Messages request."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``. ``max_tokens`` is required, as Anthropic requires it."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None  # not Anthropic's: llama.cpp server's extra, write max_tokens tokens (benchmarks)
