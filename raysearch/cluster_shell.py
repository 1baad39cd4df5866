"""What the shell commands of a cluster file run, and with which environment.

Cluster files hold shell: the launcher's setup and start commands, KubeRay container commands
and the `ray start` line KubeRay builds from rayStartParams, a RayJob's entrypoint. Looking for
substrings there is easy to fool (`echo RAY_AUTH_MODE=token && ray start` starts Ray without
authentication), so this module reads a command string the way a POSIX shell would, far enough to
answer three questions:

- which simple commands run (split on `;`, `&&`, `||`, `|`, `&`, newlines, into `( ... )`
  subshells, `$( ... )` / backtick / `<( ... )` substitutions, `sh -c STRING`, `eval`, and
  through wrappers such as `env`, `sudo`, `nohup`, `timeout`);
- the environment each one gets: variables exported earlier in the same string (only when the
  export surely ran: not after `||`, not in a pipeline's or a subshell's copy of the shell), its
  own `NAME=value` prefixes, `env NAME=value`, and whatever the caller says the process starts
  with (a container's env);
- whether it downloads code and runs it (`curl ... | sh`, `bash <(curl ...)`,
  `eval "$(curl ...)"`, `curl -o x.sh ... && sh x.sh`).

Quoting and word splitting are `shlex`'s (POSIX mode); this module finds the structure around
the words. What cannot be known without running the command (a variable from outside, a
substitution's output) counts as unknown, never as `token`. Heredoc bodies are read as commands:
that can only refuse more, never accept more.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

# Deeper nesting of $( ... ) / ( ... ) than this is refused rather than followed (a tiny input
# must not exhaust the stack).
MAX_NESTING = 16
# Longer command strings are refused: shell in a cluster file is a few lines.
MAX_COMMAND_CHARS = 20_000

UNKNOWN = None  # a variable that is set, to a value only known when the command runs
SUB = "\x01"    # stands for a substitution inside a word handed to shlex

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish"}
INTERPRETER = re.compile(r"^(sh|bash|dash|zsh|ksh|mksh|ash|fish|perl|ruby|node|nodejs|php|pwsh|python[0-9.]*)$")
DOWNLOADERS = {"curl", "wget", "fetch", "aria2c"}
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
REDIRECTION = re.compile(r"^[0-9]*(>>|>\||>&|<&|<<<|<<-|<<|<>|&>>|&>|>|<)(.*)$", re.S)
RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac",
            "{", "}", "!", "in", "select", "function"}
# Wrappers that run their arguments as a command, with the options of theirs that take a value.
WRAPPERS = {
    "nohup": set(), "setsid": set(), "builtin": set(), "time": {"-f", "-o"},
    "nice": {"-n", "--adjustment"}, "ionice": {"-c", "-n", "-p", "-P", "-u"},
    "stdbuf": {"-i", "-o", "-e"}, "chrt": set(), "taskset": set(),
    "xargs": {"-I", "-n", "-P", "-L", "-d", "-E", "-s", "-a"},
}
SUDO_VALUE_OPTIONS = {"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T", "--user", "--group", "--host",
                      "--prompt", "--close-from", "--chdir", "--role", "--type", "--other-user", "--command-timeout"}
TIMEOUT_VALUE_OPTIONS = {"-s", "-k", "--signal", "--kill-after"}
ENV_VALUE_OPTIONS = {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}


class ShellSyntaxError(ValueError):
    """A command string this module cannot read (unbalanced quotes or brackets, too deep, too long)."""


# -- structure -------------------------------------------------------------------------------------
@dataclass
class Simple:
    """One simple command: its source text, the text handed to shlex (substitutions replaced by
    SUB) and the substitutions inside it, in order."""

    text: str
    words_text: str
    substitutions: list["Substitution"] = field(default_factory=list)


@dataclass
class Substitution:
    kind: str              # "$(", "`" or "<(" / ">("
    script: "Script"
    text: str


@dataclass
class Subshell:
    script: "Script"
    text: str


Command = Simple | Subshell
Pipeline = list[Command]


@dataclass
class AndOr:
    """Pipelines joined by && / ||: connectors[i] joins pipelines[i] and pipelines[i + 1]."""

    pipelines: list[Pipeline]
    connectors: list[str]
    background: bool = False


Script = list[AndOr]


class _Reader:
    """Recursive descent over the characters of one command string."""

    def __init__(self, text: str):
        self.text = text
        self.i = 0

    def fail(self, what: str):
        raise ShellSyntaxError(what)

    def peek(self, n: int = 1) -> str:
        return self.text[self.i:self.i + n]

    def script(self, depth: int, closing: str | None) -> Script:
        """Lists until the end of the text, or until `closing` (")" or "`") at this level."""
        if depth > MAX_NESTING:
            self.fail(f"nested more than {MAX_NESTING} levels deep")
        items: Script = []
        pipelines: list[Pipeline] = []
        connectors: list[str] = []
        pipeline: Pipeline = []

        def end_pipeline():
            nonlocal pipeline
            if pipeline:
                pipelines.append(pipeline)
            elif connectors and len(connectors) >= len(pipelines):
                self.fail(f"nothing after `{connectors[-1]}`")
            pipeline = []

        def end_list(background: bool = False):
            nonlocal pipelines, connectors
            end_pipeline()
            if pipelines:
                items.append(AndOr(pipelines, connectors, background))
            elif background:
                self.fail("nothing before `&`")
            pipelines, connectors = [], []

        while True:
            self.skip_blanks()
            if self.i >= len(self.text):
                if closing is not None:
                    self.fail(f"no closing {closing!r}")
                end_list()
                return items
            c = self.text[self.i]
            if closing is not None and c == closing:
                self.i += 1
                end_list()
                return items
            if c == "#":
                while self.i < len(self.text) and self.text[self.i] != "\n":
                    self.i += 1
                continue
            two = self.peek(2)
            if two in ("&&", "||"):
                self.i += 2
                if not pipeline:
                    self.fail(f"nothing before `{two}`")
                end_pipeline()
                connectors.append(two)
                continue
            if two == ";;":
                self.i += 2
                end_list()
                continue
            if c in ";\n":
                self.i += 1
                if connectors and not pipeline and c == "\n":
                    continue  # `a &&` newline `b`: the list goes on
                end_list()
                continue
            if c == "&":
                self.i += 1
                end_list(background=True)
                continue
            if c == "|":
                self.i += 2 if two == "|&" else 1
                if not pipeline:
                    self.fail("nothing before `|`")
                self.skip_blanks(newlines=True)
                if self.i >= len(self.text):
                    self.fail("nothing after `|`")
                pipeline.append(self.command(depth))
                continue
            if c == ")":
                self.fail("a `)` without its `(`")
            if pipeline:
                self.fail(f"a command right after {pipeline[-1].text!r}")
            before = self.i
            pipeline.append(self.command(depth))
            if self.i == before:
                self.fail(f"an unexpected {c!r}")

    def skip_blanks(self, newlines: bool = False):
        blanks = " \t\r\n" if newlines else " \t\r"
        while self.i < len(self.text):
            if self.text[self.i] in blanks:
                self.i += 1
            elif self.text.startswith("\\\n", self.i):
                self.i += 2
            else:
                return

    def command(self, depth: int) -> Command:
        """A subshell `( ... )` or a simple command, up to the next operator."""
        start = self.i
        if self.peek() == "(" and self.peek(2) != "((":
            self.i += 1
            inner = self.script(depth + 1, ")")
            self.redirections_after_group()
            return Subshell(inner, self.text[start:self.i])
        words: list[str] = []
        subs: list[Substitution] = []
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r":
                words.append(c)
                self.i += 1
                continue
            if c in ";\n|)" or (c == "&" and not self._redirection_ampersand(words)):
                break
            if c == "#" and (not words or words[-1] in " \t\r"):
                break
            if c == "(":
                # `name()` function definitions and `a=(x y)` arrays are words here.
                if self.peek(2) == "()":
                    words.append("()")
                    self.i += 2
                    continue
                if words and words[-1].endswith("="):
                    words.append(self.balanced_literal())
                    continue
                if words and words[-1] in "<>":
                    self.substitution(words, subs, depth, words.pop() + "(")
                    continue
                self.fail("a `(` inside a command")
            if c == "\\":
                words.append(self.text[self.i:self.i + 2])
                self.i += 2
                continue
            if c == "'":
                end = self.text.find("'", self.i + 1)
                if end < 0:
                    self.fail("an unbalanced single quote")
                words.append(self.text[self.i:end + 1])
                self.i = end + 1
                continue
            if c == '"':
                self.double_quoted(words, subs, depth)
                continue
            if c == "$" and self.peek(2) == "$(":
                self.substitution(words, subs, depth, "$(")
                continue
            if c == "`":
                self.substitution(words, subs, depth, "`")
                continue
            words.append(c)
            self.i += 1
        text = self.text[start:self.i].strip()
        return Simple(text=text, words_text="".join(words), substitutions=subs)

    def _redirection_ampersand(self, words: list[str]) -> bool:
        """`&` in `2>&1`, `<&3`, `&>file` is part of a redirection, not `&`."""
        before = words[-1] if words else ""
        return before in (">", "<") or self.peek(2) == "&>"

    def redirections_after_group(self):
        while True:
            self.skip_blanks()
            if self.i < len(self.text) and (self.text[self.i] in "<>" or self.text[self.i].isdigit()):
                while self.i < len(self.text) and self.text[self.i] not in " \t\r\n;&|)":
                    self.i += 1
            else:
                return

    def balanced_literal(self) -> str:
        start, level = self.i, 0
        while self.i < len(self.text):
            c = self.text[self.i]
            level += {"(": 1, ")": -1}.get(c, 0)
            self.i += 1
            if level == 0:
                return self.text[start:self.i]
        self.fail("an unbalanced `(`")

    def double_quoted(self, words: list[str], subs: list[Substitution], depth: int):
        words.append('"')
        self.i += 1
        while self.i < len(self.text):
            c = self.text[self.i]
            if c == '"':
                words.append('"')
                self.i += 1
                return
            if c == "\\":
                words.append(self.text[self.i:self.i + 2])
                self.i += 2
            elif c == "$" and self.peek(2) == "$(":
                self.substitution(words, subs, depth, "$(")
            elif c == "`":
                self.substitution(words, subs, depth, "`")
            else:
                words.append(c)
                self.i += 1
        self.fail("an unbalanced double quote")

    def substitution(self, words: list[str], subs: list[Substitution], depth: int, kind: str):
        start = self.i - (1 if kind in ("<(", ">(") else 0)
        self.i += 1 if kind in ("`", "<(", ">(") else 2
        if kind == "`":
            end = self.i
            while end < len(self.text) and self.text[end] != "`":
                end += 2 if self.text[end] == "\\" else 1
            if end >= len(self.text):
                self.fail("an unbalanced backtick")
            inner = _Reader(self.text[self.i:end].replace("\\`", "`")).script(depth + 1, None)
            self.i = end + 1
        else:
            inner = self.script(depth + 1, ")")
        subs.append(Substitution(kind, inner, self.text[start:self.i]))
        words.append(SUB)


def parse(text: str) -> Script:
    """The structure of a command string; ShellSyntaxError when a shell could not read it either
    (or it is nested or long beyond what a cluster file needs)."""
    if len(text) > MAX_COMMAND_CHARS:
        raise ShellSyntaxError(f"longer than {MAX_COMMAND_CHARS} characters")
    if "\x00" in text or SUB in text:
        raise ShellSyntaxError("control characters in the command")
    return _Reader(text).script(0, None)


# -- meaning ---------------------------------------------------------------------------------------
Env = dict[str, "str | None"]


@dataclass
class Run:
    """One command that runs: its arguments (wrappers removed; a word holding a substitution is
    None), the exported environment it gets, and the simple command it came from."""

    argv: list[str | None]
    env: Env
    text: str
    token_file: bool          # a `ray get-auth-token --generate` surely ran before it


@dataclass
class Finding:
    """Something in a command string that must not be there."""

    what: str
    text: str


@dataclass
class _Shell:
    exported: Env
    variables: Env
    allexport: bool = False
    token_file: bool = False
    downloads: set[str] = field(default_factory=set)
    aliases: dict[str, list[str]] = field(default_factory=dict)

    def copy(self) -> "_Shell":
        return _Shell(dict(self.exported), dict(self.variables), self.allexport, self.token_file, set(self.downloads),
                      dict(self.aliases))

    def value(self, name: str) -> str | None:
        return self.variables.get(name, self.exported.get(name))


@dataclass
class Analysis:
    runs: list[Run] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    substitutions: list[str] = field(default_factory=list)   # `$( ... )` / backtick texts, outermost


def _expand(word: str, shell: _Shell) -> str | None:
    """A word's value where it is known: $NAME and ${NAME} from this shell, else unknown."""
    if SUB in word:
        return UNKNOWN
    parts = re.split(r"(\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*)", word)
    out = []
    for part in parts:
        if part.startswith("$") and len(part) > 1:
            value = shell.value(part.strip("${}"))
            if value is UNKNOWN:
                return UNKNOWN
            out.append(value)
        elif "$" in part:
            return UNKNOWN   # $1, $?, ${x:-y} and the like: known only at run time
        else:
            out.append(part)
    return "".join(out)


def _take_assignments(words: list[str], start: int, env: Env, shell: _Shell) -> int:
    """Read the NAME=value words from `start` into `env` (`env X=1 cmd`, `sudo X=1 cmd`); the index of
    the first word that is not one."""
    while start < len(words) and (match := ASSIGNMENT.match(words[start])):
        env[match.group(1)] = _expand(match.group(2), shell)
        start += 1
    return start


def _name(word: str | None) -> str:
    return PurePosixPath(word).name if word else ""


def _words(simple: Simple) -> list[str]:
    try:
        words = shlex.split(simple.words_text, comments=False, posix=True)
    except ValueError as exc:
        raise ShellSyntaxError(str(exc)) from None
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        match = REDIRECTION.match(word)
        if match and not ASSIGNMENT.match(word):
            skip = match.group(2) == ""
            continue
        out.append(word)
    return out


def _options(args: list[str], takes_value: set[str]) -> int:
    """Index of the first argument after a command's options."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            return i + 1
        if args[i] in takes_value:
            i += 1
        i += 1
    return i


class _Walker:
    def __init__(self):
        self.analysis = Analysis()

    # Lists, pipelines, subshells.
    def script(self, script: Script, shell: _Shell):
        for item in script:
            self.and_or(item, shell.copy() if item.background else shell)

    def and_or(self, item: AndOr, shell: _Shell):
        # The first pipeline always runs, so what it exports stays. A later one runs only if the
        # ones before succeeded (&&) or failed (||): its exports reach the rest of its own
        # &&-chain, and nothing after the list. After a `||` nothing is sure to have run.
        self.pipeline(item.pipelines[0], shell)
        chain, sure = shell.copy(), None
        for connector, pipeline in zip(item.connectors, item.pipelines[1:]):
            if connector == "||" and sure is None:
                sure = chain.copy()
            self.pipeline(pipeline, chain if sure is None else sure.copy())

    def pipeline(self, pipeline: Pipeline, shell: _Shell):
        if len(pipeline) == 1:
            self.command(pipeline[0], shell)
            return
        runs = []
        for command in pipeline:   # each part of a pipeline runs in its own copy of the shell
            before = len(self.analysis.runs)
            self.command(command, shell.copy())
            runs.append(self.analysis.runs[before:])
        fetched = False
        for part, command in zip(runs, pipeline):
            names = {_name(r.argv[0]) for r in part if r.argv}
            if fetched and any(INTERPRETER.match(n) for n in names):
                self.find("pipes downloaded code into an interpreter", " | ".join(c.text for c in pipeline))
                return
            fetched = fetched or bool(names & DOWNLOADERS)

    def command(self, command: Command, shell: _Shell):
        if isinstance(command, Subshell):
            self.script(command.script, shell.copy())
            return
        fetching = []
        for sub in command.substitutions:
            before = len(self.analysis.runs)
            self.script(sub.script, shell.copy())
            fetching.append(any(_name(r.argv[0]) in DOWNLOADERS for r in self.analysis.runs[before:] if r.argv))
            if sub.kind in ("$(", "`"):
                self.analysis.substitutions.append(sub.text)
        words = _words(command)
        self.simple(words, shell, command.text, fetched_code=any(fetching))

    # Simple commands.
    def simple(self, words: list[str], shell: _Shell, text: str, fetched_code: bool = False,
               inline: Env | None = None, env: Env | None = None):
        """`words` after the shell's own work; `env` the exported environment (the shell's when
        None), `inline` the NAME=value prefixes seen so far."""
        inline = dict(inline or {})
        if words[:1] == ["function"] and len(words) > 1:
            words = [words[1].removesuffix("()") + "()", *words[2:]]
        i = 0
        while i < len(words) and (words[i] in RESERVED or ASSIGNMENT.match(words[i])):
            match = ASSIGNMENT.match(words[i])
            if match:
                inline[match.group(1)] = _expand(match.group(2), shell)
            i += 1
        args = words[i:]
        if len(args) > 1 and args[1] == "()":
            args = [args[0] + "()", *args[2:]]
        if args and args[0].endswith("()"):
            # A function definition: its body runs whenever the function is called, so it is
            # read as if it ran here (exports in it are not counted).
            self.simple([w for w in args[1:] if w not in ("{", "}")], shell.copy(), text, fetched_code)
            return
        if args and args[0] in shell.aliases:   # the launcher's shells are interactive: aliases apply
            args = [*shell.aliases[args[0]], *args[1:]]
        if not args:
            for name, value in inline.items():   # plain assignments: this shell's variables
                if name in shell.exported or shell.allexport:
                    shell.exported[name] = value
                    shell.variables.pop(name, None)
                else:
                    shell.variables[name] = value
            return
        base = dict(shell.exported if env is None else env)
        self.run(args, {**base, **inline}, shell, text, fetched_code)

    def run(self, args: list[str], env: Env, shell: _Shell, text: str, fetched_code: bool):
        first = _expand(args[0], shell)
        if first is UNKNOWN:
            # `$HOME/bin/tool` is still `tool`; `$CMD` or `$(...)` could be anything, `ray start` included.
            tail = args[0].rsplit("/", 1)[-1]
            if "$" in tail or SUB in tail or "`" in tail:
                self.find("names the command it runs with a value known only at run time", text)
                return
            first = tail
        elif len(first.split()) > 1 and first != args[0]:
            args = [*first.split(), *args[1:]]   # an unquoted $VAR holding several words
            first = args[0]
        name = _name(first)
        rest = args[1:]
        if name == "env":
            start = 0
            while start < len(rest) and rest[start].startswith("-") and rest[start] != "-":
                option = rest[start]
                if option in ("-i", "--ignore-environment"):
                    env = {}
                elif option in ("-u", "--unset") and start + 1 < len(rest):
                    env.pop(rest[start + 1], None)
                elif option.startswith("--unset="):
                    env.pop(option.split("=", 1)[1], None)
                elif option in ("-S", "--split-string") and start + 1 < len(rest):
                    rest = rest[:start] + shlex.split(rest[start + 1]) + rest[start + 2:]
                    continue
                if option == "--":
                    start += 1
                    break
                start += 2 if option in ENV_VALUE_OPTIONS else 1
            if start < len(rest) and rest[start] == "-":
                env, start = {}, start + 1
            start = _take_assignments(rest, start, env, shell)
            if start < len(rest):
                self.run(rest[start:], env, shell, text, fetched_code)
            return
        if name == "exec":
            start = 0
            while start < len(rest) and rest[start].startswith("-"):
                if rest[start] == "-c":
                    env = {}
                start += 2 if rest[start] == "-a" else 1
            if start < len(rest):
                self.run(rest[start:], env, shell, text, fetched_code)
            return
        if name == "command":
            if any(a in ("-v", "-V") for a in rest[:1]):
                return
            start = _options(rest, set())
            if start < len(rest):
                self.run(rest[start:], env, shell, text, fetched_code)
            return
        if name == "sudo":
            keep = any(a in ("-E", "--preserve-env") or a.startswith("--preserve-env=") for a in rest)
            start = _options(rest, SUDO_VALUE_OPTIONS)
            env = dict(env) if keep else {}
            start = _take_assignments(rest, start, env, shell)
            if start < len(rest):
                self.run(rest[start:], env, shell, text, fetched_code)
            return
        if name == "timeout":
            start = _options(rest, TIMEOUT_VALUE_OPTIONS) + 1   # then the duration
            if start < len(rest):
                self.run(rest[start:], env, shell, text, fetched_code)
            return
        if name in WRAPPERS:
            start = _options(rest, WRAPPERS[name])
            if name in ("chrt", "taskset") and start < len(rest):
                start += 1   # the priority / the CPU mask
            if start < len(rest):
                self.run(rest[start:], env, shell, text, fetched_code)
            return

        argv = [first, *(_expand(a, shell) for a in rest)]
        if name == "ray" and _ray_command(argv[1:])[:1] == [UNKNOWN]:
            self.find("runs a `ray` subcommand known only at run time", text)
        if name == "alias":
            for arg in rest:
                match = ASSIGNMENT.match(arg)
                if match:
                    try:
                        shell.aliases[match.group(1)] = shlex.split(match.group(2))
                    except ValueError:
                        self.find("defines an alias no shell can read", text)
        self.analysis.runs.append(Run(argv=argv, env=dict(env), text=text, token_file=shell.token_file))
        if fetched_code and (INTERPRETER.match(name) or name in ("eval", "source", ".")):
            self.find("runs code that it downloads", text)
        if name in DOWNLOADERS:
            shell.downloads |= _downloaded_files(name, rest)
        elif (name in shell.downloads or (INTERPRETER.match(name) and any(
                _name(a) in shell.downloads for a in rest if not a.startswith("-")))) and shell.downloads:
            self.find("runs a file that it downloads", text)
        if name in ("export", "declare", "typeset", "local", "readonly"):
            self.export(name, rest, shell)
        elif name == "unset":
            for variable in rest:
                shell.exported.pop(variable, None)
                shell.variables.pop(variable, None)
        elif name == "set":
            for option in rest:
                if option.startswith("-") and "a" in option[1:] and not option.startswith("--"):
                    shell.allexport = True
                elif option.startswith("+") and "a" in option[1:]:
                    shell.allexport = False
            if "allexport" in rest:
                shell.allexport = rest[rest.index("allexport") - 1] == "-o"
        elif name == "eval":
            if UNKNOWN in argv[1:]:
                if not fetched_code:
                    self.find("evaluates a string known only at run time", text)
                return
            self.nested(" ".join(argv[1:]), shell, text)
        elif name in SHELLS:
            has_script, script = _shell_script(argv[1:])
            if has_script and script is UNKNOWN and not fetched_code:
                self.find("hands a shell a script known only at run time", text)
            elif script is not None:
                self.nested(script, _Shell(exported=dict(env), variables={}, token_file=shell.token_file), text)
        elif name == "ray" and _ray_command(argv[1:])[:1] == ["get-auth-token"] and "--generate" in argv:
            shell.token_file = True

    def export(self, name: str, args: list[str], shell: _Shell):
        if name in ("declare", "typeset", "local", "readonly") and not any(
                a.startswith("-") and "x" in a for a in args):
            for arg in args:
                match = ASSIGNMENT.match(arg)
                if match and not arg.startswith("-"):
                    shell.variables[match.group(1)] = _expand(match.group(2), shell)
            return
        remove = "-n" in args
        for arg in args:
            if arg.startswith("-"):
                continue
            match = ASSIGNMENT.match(arg)
            variable = match.group(1) if match else arg
            if remove:
                if variable in shell.exported:
                    shell.variables[variable] = shell.exported.pop(variable)
                continue
            value = _expand(match.group(2), shell) if match else shell.value(variable)
            if match or variable in shell.variables or variable in shell.exported:
                shell.exported[variable] = value
                shell.variables.pop(variable, None)

    def nested(self, script: str, shell: _Shell, text: str):
        try:
            tree = parse(script)
        except ShellSyntaxError as exc:
            self.find(f"hands `sh -c`/`eval` a string no shell can read ({exc})", text)
            return
        self.script(tree, shell)

    def find(self, what: str, text: str):
        self.analysis.findings.append(Finding(what, text))


def _shell_script(args: list[str | None]) -> tuple[bool, str | None]:
    """Whether a shell's arguments hold `-c SCRIPT` (options such as -e, -l, -o pipefail before
    it), and the script (None when it is known only at run time)."""
    has_c, i = False, 0
    while i < len(args) and args[i] and args[i][:1] in "-+" and args[i] not in ("-", "--"):
        if args[i] in ("-o", "+o"):
            i += 1
        elif "c" in args[i][1:] and not args[i].startswith("--"):
            has_c = True
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    return has_c and i < len(args), args[i] if has_c and i < len(args) else None


def _downloaded_files(tool: str, args: list[str]) -> set[str]:
    """Names of the files a curl / wget call writes (what a later `sh FILE` would run)."""
    names: set[str] = set()
    urls = [a for a in args if "://" in a]
    for i, arg in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        if tool == "curl" and arg in ("-o", "--output") or tool == "wget" and arg in ("-O", "--output-document"):
            names.add(_name(value))
        elif arg.startswith("--output=") or arg.startswith("--output-document="):
            names.add(_name(arg.split("=", 1)[1]))
        elif tool == "curl" and arg.startswith("-o") and len(arg) > 2:
            names.add(_name(arg[2:]))
    if tool == "wget" and not names or tool == "curl" and ("-O" in args or "--remote-name" in args):
        names |= {_name(u.split("?")[0].rstrip("/")) for u in urls}
    return {n for n in names if n and n != "-"}


def _ray_command(args: list[str | None]) -> list[str | None]:
    """`ray`'s arguments from its subcommand on (its own options, e.g. --logging-level, skipped)."""
    i = 0
    while i < len(args) and args[i] is not None and args[i].startswith("-"):
        i += 1 if "=" in args[i] or args[i] in ("--help", "--version") else 2
    return list(args[i:])


def analyze(text: str, env: Env | None = None, token_file: bool = False) -> Analysis:
    """Every command `text` runs, with the environment it gets, and what must not be there.

    `env` is what the shell starts with (exported; None values are set but unknown), `token_file`
    whether ~/.ray/auth_token is there already. Raises ShellSyntaxError when no shell could read it."""
    walker = _Walker()
    walker.script(parse(text), _Shell(exported=dict(env or {}), variables={}, token_file=token_file))
    return walker.analysis


def ray_subcommand(run: Run) -> str | None:
    """'start', 'stop', ... when `run` is the ray CLI, else None."""
    if not run.argv or _name(run.argv[0]) != "ray":
        return None
    args = _ray_command(run.argv[1:])
    return args[0] if args else None


def auth_problem(run: Run) -> str | None:
    """Why `ray start` in `run` would start without token authentication, or None."""
    mode = run.env.get("RAY_AUTH_MODE", "")
    if mode != "token":
        got = "not set" if "RAY_AUTH_MODE" not in run.env else (
            "set to a value known only at run time" if mode is UNKNOWN else f"{mode!r}")
        return f"RAY_AUTH_MODE is {got} for it"
    has_token = any(run.env.get(k, "") != "" for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))
    if not (has_token or run.token_file):
        return "it has RAY_AUTH_MODE=token but no token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
    return None


def short(text: str, limit: int = 120) -> str:
    """A command on one line, cut to `limit` characters, for a one-line error."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit - 3] + "..."


__all__ = ["Analysis", "Finding", "Run", "ShellSyntaxError", "analyze", "auth_problem", "parse", "ray_subcommand",
           "short", "UNKNOWN"]
