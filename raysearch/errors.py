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
