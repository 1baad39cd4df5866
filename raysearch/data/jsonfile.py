"""Reading the small JSON files a user may hand us (manifests, layout files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raysearch.errors import UserInputError

_MAX_JSON_BYTES = 16 << 20  # a manifest of 10,000 class names is well under 1 MB
# Our files nest a few levels; a limit far below Python's recursion limit keeps every later
# json.dumps / walk of the value safe too.
MAX_JSON_DEPTH = 32


def read_json_file(file: Path, fix: str) -> Any:
    """The JSON value in `file`; any problem (unreadable, too big, not UTF-8, bad syntax, nested
    too deeply for Python's parser) is one UserInputError line naming the file and `fix`."""
    try:
        size = file.stat().st_size
        if size > _MAX_JSON_BYTES:
            raise UserInputError(f"file {file}: {size} bytes is more than a JSON file here may "
                                 f"hold ({_MAX_JSON_BYTES} bytes); {fix}")
        text = file.read_bytes().decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError:
        raise UserInputError(f"file {file}: not UTF-8 JSON; {fix}") from None
    except json.JSONDecodeError as e:
        raise UserInputError(
            f"file {file}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); {fix}"
        ) from None
    except RecursionError:
        raise UserInputError(f"file {file}: JSON nested too deeply to read; {fix}") from None
    except OSError as e:
        raise UserInputError(f"file {file}: cannot be read ({e.strerror or e}); {fix}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise UserInputError(f"file {file}: JSON nested more than {MAX_JSON_DEPTH} levels deep; "
                             f"{fix}")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of lists and objects, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((v, level + 1) for v in (node.values() if isinstance(node, dict)
                                                      else node))
    return deepest
