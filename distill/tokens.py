"""Token counts: a real tokenizer when one is configured (with its chat template applied to conversations), else the
log's own count, else a length proxy.

The chat template is rendered the way transformers' `apply_chat_template` renders it (without depending on
transformers): jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loop controls,
`raise_exception`, a `tojson` filter that does not escape HTML, `{% generation %}` blocks, and the tokenizer's special
tokens (bos_token, eos_token, ...) as variables; the rendered text is encoded without adding special tokens again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.record import Record

CHARS_PER_TOKEN = 4  # the usual rough ratio for English text with BPE tokenizers
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# `strftime_now` renders this instant, not the clock, so a count (and a run) never depends on the day it ran.
FIXED_NOW = datetime(2000, 1, 1, tzinfo=timezone.utc)

TokenCounter = Callable[[str], int]
Message = Mapping[str, Any]


def _message_text(message: Message) -> str:
    """What a message holds as text when no template says how it is laid out: its content and tool calls."""
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False) if content else ""
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"], ensure_ascii=False, sort_keys=True)
    return text


def proxy_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def messages_proxy_tokens(messages: Sequence[Message]) -> int:
    """The length proxy for a conversation: ceil(characters / 4) per message, content and tool calls."""
    return sum(proxy_tokens(_message_text(m)) for m in messages)


def compile_chat_template(source: str) -> Any:
    """The template compiled as transformers compiles chat templates (see the module docstring)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks trained text for transformers' assistant mask; for a
        count only its content matters."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[Generation, loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = FIXED_NOW.strftime
    return environment.from_string(source)


class Tokenizer:
    """A HuggingFace tokenizer (`tokenizer.json`) and, from a tokenizer directory, its chat template and special
    tokens. Calling it counts the tokens of a text; `count_messages` those of a conversation as the model sees it."""

    def __init__(self, encoder: Any, chat_template: str | None = None, special_tokens: Mapping[str, str] = {}):
        self.encoder = encoder
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens)
        self._template = compile_chat_template(chat_template) if chat_template is not None else None

    @property
    def method(self) -> str:
        """How `count_messages` counts: `chat_template` (rendered, then encoded) or `tokenizer` (message texts)."""
        return "chat_template" if self._template is not None else "tokenizer"

    def __call__(self, text: str) -> int:
        return len(self.encoder.encode(text, add_special_tokens=False).ids)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
        if self._template is None:
            raise ValueError("this tokenizer has no chat template")
        return self._template.render(
            messages=list(messages), tools=None, documents=None, add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of the rendered conversation, or (without a chat template) the sum over its message texts."""
        if self._template is not None:
            return self(self.render(messages))
        return sum(self(_message_text(m)) for m in messages)


def _special_token(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string, or a serialized AddedToken {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(config: Mapping[str, Any], directory: Path, key: str) -> str | None:
    """The directory's chat template: `chat_template.jinja`, else tokenizer_config.json's `chat_template` (a
    string, or named templates of which `default` is used)."""
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text("utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise ConfigError([f"{key}: {directory / TOKENIZER_CONFIG} has named chat templates but no 'default'"])
        template = named["default"]
    return template if isinstance(template, str) else None


def load_tokenizer(path: str, key: str = "tokenizer") -> Tokenizer:
    """A Tokenizer from a `tokenizer.json` file, or from a directory holding `tokenizer.json` and (for the chat
    template and special tokens) `tokenizer_config.json` / `chat_template.jinja`. Needs the `tokenizers` package
    (extra `tokenizer`); the template needs jinja2. Errors name the config `key`."""
    try:
        from tokenizers import Tokenizer as Encoder
    except ImportError:
        raise ConfigError([f"{key}: needs the tokenizers package: pip install 'distill[tokenizer]'"]) from None
    # Workers are forked from the driver; the tokenizer's own thread pool must not be live across a fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    location = Path(path).expanduser()
    directory = location if location.is_dir() else None
    file = directory / TOKENIZER_FILE if directory is not None else location
    try:
        encoder = Encoder.from_file(str(file))
    except Exception as error:  # tokenizers raises a bare Exception for a missing or malformed file
        raise ConfigError([f"{key}: cannot load {file}: {error}"]) from None
    if directory is None:
        return Tokenizer(encoder)
    config: dict[str, Any] = {}
    if (directory / TOKENIZER_CONFIG).is_file():
        try:
            config = json.loads((directory / TOKENIZER_CONFIG).read_text("utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError([f"{key}: cannot read {directory / TOKENIZER_CONFIG}: {error}"]) from None
    special = {name: token for name in SPECIAL_TOKEN_KEYS if (token := _special_token(config.get(name))) is not None}
    template = _chat_template(config, directory, key)
    try:
        return Tokenizer(encoder, template, special)
    except Exception as error:  # a template jinja2 cannot compile
        raise ConfigError([f"{key}: the chat template of {directory} does not compile: {error}"]) from None


def token_length(record: Record, tokenizer: TokenCounter | None = None) -> tuple[int, str]:
    """(tokens, method): a configured tokenizer counts every record (the lengths the trained model will see);
    else `tokens_used` when the log has it, else the character-length proxy."""
    if tokenizer is not None:
        return tokenizer(record.text or ""), "tokenizer"
    if record.tokens_used is not None:
        return record.tokens_used, "tokens_used"
    return proxy_tokens(record.text or ""), "length_proxy"


class TokenBudget:
    """`task.max_tokens` for a conversation: counted with the tokenizer (its chat template applied) when one is
    configured, else with the length proxy."""

    def __init__(self, max_tokens: int, tokenizer: Tokenizer | None) -> None:
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer

    @property
    def method(self) -> str:
        return self.tokenizer.method if self.tokenizer is not None else "length_proxy"

    def count(self, messages: Sequence[Message]) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.count_messages(messages)
        return messages_proxy_tokens(messages)
