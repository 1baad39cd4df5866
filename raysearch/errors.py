"""The one error type that reaches users, and the one reader of user YAML.

Every check of user input (paths, files, YAML, overrides, CLI flags) raises `UserInputError`
with a single line that names the file, field or value and says how to fix it. The CLI turns it
into `raysearch: error: <message>` on stderr and exit code 2; nothing else is caught there, so a
real bug still shows its traceback.

Every YAML file a user hands us (search spaces, cluster files) and every YAML text inside one
goes through `load_user_yaml` / `parse_user_yaml`: safe constructors only, and limits that a
small hostile file cannot get around (see the constants below).
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

# A message is one line of at most this many characters; a longer one keeps its start (file and
# field) and its end (the fix) and drops the middle.
MAX_MESSAGE_CHARS = 1000

# Limits of user YAML. The shipped files are under 5 KiB, 8 levels deep, with no aliases.
MAX_YAML_BYTES = 1 << 20        # refused before parsing
MAX_YAML_DEPTH = 64             # nested collections, counted through aliases
MAX_YAML_ALIASES = 1000         # `*name` references in one document
MAX_YAML_NODES = 100_000        # nodes once every alias is expanded ("billion laughs" stops here)


class UserInputError(ValueError):
    """Bad input from a user: the message is one line and says what to change."""

    def __init__(self, message: str):
        text = str(message)
        # Bound the work before splitting: a message built from a huge value stays cheap.
        if len(text) > 4 * MAX_MESSAGE_CHARS:
            text = text[: 2 * MAX_MESSAGE_CHARS] + " ... " + text[-2 * MAX_MESSAGE_CHARS:]
        text = " ".join(text.split())
        if len(text) > MAX_MESSAGE_CHARS:
            head, tail = MAX_MESSAGE_CHARS * 2 // 3, MAX_MESSAGE_CHARS // 3 - 5
            text = f"{text[:head]} ... {text[-tail:]}"
        super().__init__(text)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 6, 6, 6


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message for a one-line error: its first non-blank line, cut at `limit`
    characters, or its type's name when it has no message."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:limit]


def show(value: Any) -> str:
    """A short repr of a user's value for an error message: long strings, deep or self-referencing
    structures and big collections are abbreviated with '...'."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<{type(value).__name__}>"


# -- YAML ---------------------------------------------------------------------------------------------
class _LimitExceeded(yaml.YAMLError):
    def __init__(self, problem: str, mark: yaml.Mark | None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _UserYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and alias expansion beyond the limits."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        # Composition recurses once per level: stop at the limit, long before Python's recursion limit.
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _LimitExceeded(f"more than {MAX_YAML_ALIASES} aliases", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _LimitExceeded(f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        _check_expanded(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` keys may be overridden by the mapping's own keys
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: SafeConstructor refuses it with its own message
                if duplicate:
                    raise _LimitExceeded(f"duplicate key {show(key)} (the last one would silently win)",
                                         key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_expanded(root: yaml.Node) -> None:
    """Walk the document as it would be after alias expansion; refuse it past the node or depth
    limit. At most MAX_YAML_NODES steps, whatever the aliases do (a self-referencing alias only
    deepens the walk until the depth limit)."""
    stack = [(root, 1)]
    visited = 0
    while stack:
        node, depth = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            raise _LimitExceeded(f"more than {MAX_YAML_NODES} values once aliases are expanded", root.start_mark)
        if depth > MAX_YAML_DEPTH:
            raise _LimitExceeded(f"nested deeper than {MAX_YAML_DEPTH} levels once aliases are expanded, "
                                 "or an alias refers to itself", node.start_mark)
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


def parse_user_yaml(text: str, source: str, fix: str = "fix the file") -> Any:
    """The YAML document in `text`, or a one-line UserInputError naming `source` and the line and
    ending with `fix`.

    For YAML embedded in a user's file (e.g. a RayJob's runtimeEnvYAML) and for files, through
    `load_user_yaml`. Duplicate keys, more than MAX_YAML_ALIASES aliases, more than MAX_YAML_NODES
    values after alias expansion and nesting deeper than MAX_YAML_DEPTH are refused."""
    if len(text) > MAX_YAML_BYTES:
        raise UserInputError(f"{source}: {len(text)} characters of YAML, more than the "
                             f"{MAX_YAML_BYTES} allowed; is this the right file?")
    loader = None
    try:
        loader = _UserYamlLoader(text)  # the reader refuses control characters here already
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).strip().split("\n")[0]
        raise UserInputError(f"{source}: {where}: not valid YAML ({problem}); {fix}") from None
    except ValueError as exc:
        # A scalar that matches a YAML type but does not fit it: a 30th of February, an integer of
        # more than 4300 digits.
        raise UserInputError(f"{source}: YAML value out of range ({exc}); quote it or fix it") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_user_yaml(path: str | Path, missing_hint: str) -> Any:
    """The parsed YAML document at `path`, or a one-line UserInputError naming the file and the
    line. `missing_hint` says what to pass instead when there is no such file. Files larger than
    MAX_YAML_BYTES are refused before parsing; see `parse_user_yaml` for the other limits."""
    path = Path(path)
    try:
        if not path.exists():
            raise UserInputError(f"{path}: no such file; {missing_hint}")
        if not path.is_file():  # a directory, or a FIFO or device that reading would block on or never end
            raise UserInputError(f"{path}: not a regular file; {missing_hint}")
        with path.open("rb") as stream:
            data = stream.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read the file ({exc.strerror or exc}); check the path "
                             "and its permissions") from None
    if len(data) > MAX_YAML_BYTES:
        raise UserInputError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB, the most a YAML file "
                             "may be; is this the right file?")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    return parse_user_yaml(text, str(path))
