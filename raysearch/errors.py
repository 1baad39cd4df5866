"""The one error type that reaches users.

Every check of user input (paths, files, YAML, overrides, CLI flags) raises `UserInputError`
with a single line that names the file, field or value and says how to fix it. The CLI turns it
into `raysearch: error: <message>` on stderr and exit code 2; nothing else is caught there, so a
real bug still shows its traceback.
"""


class UserInputError(ValueError):
    """Bad input from a user: the message is one line and says what to change."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def load_user_yaml(path, missing_hint: str):
    """The parsed YAML document at `path` (safe_load), or a one-line UserInputError naming the
    file and the line. `missing_hint` says what to pass instead when there is no such file."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; {missing_hint}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"{path}: {where}: not valid YAML ({problem}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the file ({exc}); check its permissions and encoding") from None
