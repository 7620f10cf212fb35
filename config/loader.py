"""Load a square's TOML config into a SquareConfig, turning every problem into a FILE:LINE: key.path: message issue.

Kept in one file past 400 lines: finding a key's line in the TOML text, pydantic's errors and the
cross-checks all end in the same issue format, and each needs the others' line lookup.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from config.issues import CrossCheckError, Loc, dotted, number_text
from config.schema import SquareConfig, cross_issues, square_warnings

__all__ = ["ConfigError", "ConfigIssue", "config_warnings", "key_line", "load_config", "load_config_text"]



@dataclasses.dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, at a 1-based line (0 when the file itself cannot be read).

    An "error" makes the config unusable; a "warning" is a risk the gateway runs with it.
    """

    file: str
    line: int
    key_path: str
    message: str
    level: typing.Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        level = "warning: " if self.level == "warning" else ""
        return f"{self.file}:{self.line}: {level}{self.key_path}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def load_config(path: str | Path) -> SquareConfig:
    """Read and validate the config file at `path`; relative paths in it are taken from its folder."""
    file_path = Path(path)
    file_name = str(path)
    try:
        data = file_path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigIssue(file_name, 0, "file", f"cannot read the config file: {reason}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(file_name, line, "file", "the file is not valid UTF-8 text")]) from None
    return load_config_text(text, file_name, base_dir=file_path.absolute().parent)


def load_config_text(text: str, file_name: str = "<config>", base_dir: str | Path | None = None) -> SquareConfig:
    """Validate config `text` as if read from `file_name`; relative paths are joined to `base_dir` when given."""
    text = text.removeprefix("\ufeff")  # some editors on Windows write a byte-order mark
    locator = _Locator(text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(exc, file_name, locator)]) from None
    try:
        square = SquareConfig.model_validate(raw)
    except ValidationError as exc:
        issues = [
            ConfigIssue(file_name, locator.line_of(loc), dotted(loc), _naming_entry(raw, loc, message))
            for loc, message in _merged(_explain(exc), cross_issues(raw))
        ]
        issues.sort(key=lambda issue: issue.line)
        raise ConfigError(issues) from None
    if base_dir is not None:
        square = _resolve_paths(square, Path(base_dir))
    return square


def _resolve_paths(square: SquareConfig, base_dir: Path) -> SquareConfig:
    update: dict[str, Any] = {}
    if not square.storage.path.is_absolute():
        update["storage"] = square.storage.model_copy(update={"path": base_dir / square.storage.path})
    api_files = {key: base_dir / path for key in ("token_file", "cert_file", "key_file")
                 if (path := getattr(square.api, key)) is not None and not path.is_absolute()}
    if api_files:
        update["api"] = square.api.model_copy(update=api_files)
    tls_keys = ("tls_cert_file", "tls_key_file", "tls_ecdsa_cert_file", "tls_ecdsa_key_file")
    tls = {key: base_dir / path for key in tls_keys
           if (path := getattr(square.ocpp, key)) is not None and not path.is_absolute()}
    if tls:
        update["ocpp"] = square.ocpp.model_copy(update=tls)
    mqtt_files = {key: base_dir / path for key in ("password_file", "ca_file", "cert_file", "key_file")
                  if (path := getattr(square.mqtt, key)) is not None and not path.is_absolute()}
    if mqtt_files:
        update["mqtt"] = square.mqtt.model_copy(update=mqtt_files)
    return square.model_copy(update=update) if update else square


def config_warnings(path: str | Path, square: SquareConfig) -> list[ConfigIssue]:
    """The warnings for `square`, read from the file at `path`, each at the line of its key (1 when unreadable)."""
    try:
        locator = _Locator(Path(path).read_text(encoding="utf-8").removeprefix("\ufeff"))
    except (OSError, UnicodeDecodeError):
        locator = _Locator("")
    return [
        ConfigIssue(str(path), locator.line_of(loc), dotted(loc), message, "warning")
        for loc, message in square_warnings(square)
    ]


def key_line(text: str, key_path: str) -> int:
    """The line of config `text` that sets the dotted `key_path` (or its table; 1 when neither is there)."""
    return _Locator(text.removeprefix("\ufeff")).line_of(tuple(key_path.split(".")))


def _syntax_issue(exc: tomllib.TOMLDecodeError, file_name: str, locator: _Locator) -> ConfigIssue:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        line = int(match.group(1))
        message = f"{message[: match.start()].rstrip()} (column {match.group(2)})"
    else:
        line = max(locator.line_count, 1)
        message = message.replace("(at end of document)", "at the end of the file").strip()
    return ConfigIssue(file_name, line, locator.path_at(line) or "toml", f"invalid TOML: {message}")


def _explain(exc: ValidationError) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, CrossCheckError):
            found.extend((loc + sub_loc, message) for sub_loc, message in cause.issues)
        else:
            found.append((loc, _message(error, loc)))
    return found


def _merged(field_issues: list[tuple[Loc, str]], cross: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    """The field issues plus the cross-check issues pydantic skipped, each once.

    A cross-check on a key that has its own error (or sits in a table that has one) is left out: it
    would only restate that error, e.g. "connector 9 above the maximum 8" and "charger has 2 connectors".
    """
    merged = list(field_issues)
    failed = {loc for loc, _ in field_issues}
    for loc, message in cross:
        if not any(loc[:end] in failed for end in range(1, len(loc) + 1)):
            merged.append((loc, message))
    return merged


_ENTRY_KINDS = {"chargers": "charger", "bays": "bay"}
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def _naming_entry(raw: dict[str, Any], loc: Loc, message: str) -> str:
    """The message led by the array entry's id ("bay B12: ..."): key paths count from 0, people know the id."""
    if len(loc) < 3 or loc[0] not in _ENTRY_KINDS or not isinstance(loc[1], int) or loc[2] == "id":
        return message
    entries = raw.get(str(loc[0]))
    if not isinstance(entries, list) or not 0 <= loc[1] < len(entries) or not isinstance(entries[loc[1]], dict):
        return message
    entry_id = entries[loc[1]].get("id")
    if not isinstance(entry_id, str) or not entry_id:
        return message
    shown = entry_id if _PLAIN_ID.match(entry_id) else json.dumps(entry_id, ensure_ascii=False)
    return f"{_ENTRY_KINDS[loc[0]]} {shown}: {message}"


def _message(error: Any, loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error.get("input")
    names = [part for part in loc if isinstance(part, str)]
    key = names[-1] if names else "config"
    shown = _show(value)
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        if len(loc) == 1 and loc[0] in ("chargers", "bays"):
            return f"missing [[{loc[0]}]]: the square needs at least one"
        if len(loc) == 1:
            return f"missing required section [{loc[0]}]"
        return f"missing required key {key!r}"
    if kind == "greater_than_equal":
        return f"{shown} is below the minimum {number_text(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"{shown} is above the maximum {number_text(ctx['le'])}"
    if kind == "greater_than":
        return f"{shown} must be above {number_text(ctx['gt'])}"
    if kind == "less_than":
        return f"{shown} must be below {number_text(ctx['lt'])}"
    if kind == "too_short":
        return f"{_entry_count(value)}, needs at least {ctx['min_length']}"
    if kind == "too_long":
        return f"{_entry_count(value)}, allows at most {ctx['max_length']}"
    if kind == "string_too_short":
        return f"{shown} is too short (at least {ctx['min_length']} characters)"
    if kind == "string_too_long":
        return f"{shown} is too long (at most {ctx['max_length']} characters)"
    if kind == "string_pattern_mismatch":
        return f"{shown} does not match the pattern {ctx['pattern']}"
    if kind == "literal_error":
        return f"{shown} is not one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    expected = _EXPECTED.get(kind)
    if expected:
        return f"{shown} is not {expected}"
    return f"{shown}: {error['msg']}"


def _entry_count(value: Any) -> str:
    count = len(value) if isinstance(value, (list, dict, str)) else 0
    return f"has {count} {'entry' if count == 1 else 'entries'}"


_EXPECTED = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "model_type": "a table",
    "dict_type": "a table",
    "list_type": "an array of tables ([[...]])",
    "path_type": "a path string",
    "finite_number": "a finite number",
}


def _unknown_key(loc: Loc) -> str:
    name = str(loc[-1])
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown key {name!r}"
    known = list(model.model_fields)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {name!r} (did you mean {close[0]!r}?)"
    return f"unknown key {name!r} (known: {', '.join(known)})"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] | None = SquareConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _inner_model(model.model_fields[part].annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None




def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)  # as written: "2.0 is not a whole number" must not read "2 is not a whole number"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_HEADER = re.compile(r"^\[\[?\s*(?P<name>[^\[\]]+?)\s*\]\]?\s*(#.*)?$")
_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY = re.compile(rf"^(?P<key>{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_KEY_PART = re.compile(_BARE_OR_QUOTED)


class _Locator:
    """Finds the line of a key path in TOML text by a line scan; best effort, never raises."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Loc, int] = {}
        self.line_count = len(text.splitlines())
        self._path_by_line: dict[int, Loc] = {}
        self._scan(text)

    def line_of(self, loc: Loc) -> int:
        """The line of the longest prefix of `loc` that appears in the text; 1 when none does."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return 1

    def path_at(self, line: int) -> str:
        """The dotted key path being defined at `line` (or the table it is in); "" when unknown."""
        for number in range(line, 0, -1):
            loc = self._path_by_line.get(number)
            if loc is not None:
                return dotted(loc) if loc else ""
        return ""

    def _scan(self, text: str) -> None:
        table: Loc = ()
        counts: dict[Loc, int] = {}
        state = _ValueState()
        value_key: Loc = ()
        for number, raw_line in enumerate(text.splitlines(), start=1):
            if state.open_string or state.depth > 0:
                # Later lines of a multi-line value belong to its key, not to the table.
                self._path_by_line[number] = value_key
                state.feed(raw_line)
                continue
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            header = _HEADER.match(line)
            if header and line.startswith("[["):
                array = _split_key(header.group("name"))
                index = counts.get(array, -1) + 1
                counts[array] = index
                table = (*array, index)
                self.lines.setdefault(array, number)
                self.lines.setdefault(table, number)
                self._path_by_line[number] = table
                continue
            if header:
                table = _split_key(header.group("name"))
                self.lines.setdefault(table, number)
                self._path_by_line[number] = table
                continue
            key = _KEY.match(line)
            if key is None:
                self._path_by_line[number] = table
                continue
            parts = _split_key(key.group("key"))
            for end in range(1, len(parts) + 1):
                self.lines.setdefault((*table, *parts[:end]), number)
            value_key = (*table, *parts)
            self._path_by_line[number] = value_key
            state.feed(line[key.end() :])


def _split_key(key: str) -> Loc:
    parts = []
    for match in _KEY_PART.finditer(key):
        part = match.group(0)
        if part[0] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


class _ValueState:
    """Tracks open multi-line strings and brackets across lines, so their insides are not read as keys."""

    def __init__(self) -> None:
        self.open_string: str | None = None
        self.depth = 0

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self.open_string:
                end = text.find(self.open_string, i)
                if end < 0:
                    return
                i = end + 3
                self.open_string = None
                continue
            char = text[i]
            if char == "#":
                return
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.open_string = text[i : i + 3]
                i += 3
            elif char == '"':
                i = _string_end(text, i + 1, '"')
            elif char == "'":
                i = _string_end(text, i + 1, "'")
            elif char in "[{":
                self.depth += 1
                i += 1
            elif char in "]}":
                self.depth = max(0, self.depth - 1)
                i += 1
            else:
                i += 1


def _string_end(text: str, i: int, quote: str) -> int:
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return i
