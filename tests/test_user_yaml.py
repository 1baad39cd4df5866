"""The one reader of user YAML (`raysearch.errors.load_user_yaml`): limits and one-line refusals.

Every user YAML file (search spaces, cluster files) goes through it, so a hostile or broken file
ends in one `UserInputError` line naming the file (and the line where there is one): never a
traceback, a hang, a huge message, or the last of two duplicate keys silently winning.
"""

import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysearch.errors import (
    MAX_MESSAGE_CHARS,
    MAX_YAML_ALIASES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    UserInputError,
    load_user_yaml,
    parse_user_yaml,
    show,
)

HINT = "pass a YAML file"
# The classic "billion laughs": 9 levels of 9 references, 9**9 strings once expanded, ~430 bytes.
BOMB = "lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for i, (a, b) in enumerate(zip("abcdefgh", "bcdefghi")))
FUZZ = settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused(text: str, tmp_path, *fragments: str) -> str:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError) as info:
        load_user_yaml(path, HINT)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and len(message) <= MAX_MESSAGE_CHARS, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_plain_documents_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: smoke\nbudget: {num_samples: 6}\nlist: [1, 2.5, true, null, text]\n")
    assert load_user_yaml(path, HINT) == {"name": "smoke", "budget": {"num_samples": 6},
                                          "list": [1, 2.5, True, None, "text"]}


@pytest.mark.parametrize("text, line, key", [
    ("a: 1\nb: 2\na: 3\n", 3, "'a'"),
    ("outer:\n  x: 1\n  y: 2\n  x: 3\n", 4, "'x'"),
    ("- {k: 1, k: 2}\n", 1, "'k'"),
    ("1: one\n1: uno\n", 2, "1"),
])
def test_duplicate_keys_name_the_line_and_key(tmp_path, text, line, key):
    refused(text, tmp_path, f": line {line}: ", f"duplicate key {key}")


def test_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {workers: 1, cpus: 2}\nmine: {<<: *b, workers: 4}\n")
    assert load_user_yaml(path, HINT)["mine"] == {"workers": 4, "cpus": 2}


def test_alias_bomb_fails_fast_in_one_short_line(tmp_path):
    assert len(BOMB) < 500
    tracemalloc.start()
    try:
        message = refused(BOMB, tmp_path, f"more than {MAX_YAML_NODES} values once aliases are expanded")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(message) < 300
    assert peak < 50 * 2**20  # the document is refused before anything is expanded


def test_small_bombs_and_many_aliases(tmp_path):
    # Below the node limit the same shape loads (aliases share one object, nothing is copied).
    small = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n"
    assert len(load_user_yaml(_write(tmp_path, small), HINT)["c"]) == 3
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_YAML_ALIASES + 1)) + "]\n"
    refused(many, tmp_path, f"more than {MAX_YAML_ALIASES} aliases")


@pytest.mark.parametrize("text", ["&a [*a]\n", "a: &a {b: *a}\n", "&a {<<: *a}\n"])
def test_self_referencing_aliases_are_refused(tmp_path, text):
    refused(text, tmp_path, "refers to itself")


@pytest.mark.parametrize("text", ["[" * 50_000, "{a: " * 20_000, "".join(f"{' ' * i}- \n" for i in range(0, 400, 2)),
                                  "".join(f"{' ' * i}k:\n" for i in range(0, 400, 2))])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path, text):
    refused(text, tmp_path, f"nested deeper than {MAX_YAML_DEPTH} levels")


def test_depth_through_aliases(tmp_path):
    half = "[" * 40 + "1" + "]" * 40
    refused(f"a: &a {half}\nb: {'[' * 40}*a{']' * 40}\n", tmp_path, "once aliases are expanded")


def test_file_size_is_capped_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_YAML_BYTES + b"\n")
    with pytest.raises(UserInputError, match=r"big\.yaml: larger than 1024 KiB"):
        load_user_yaml(path, HINT)
    with pytest.raises(UserInputError, match=r"<text>: .* more than the \d+ allowed"):
        parse_user_yaml("#" * (MAX_YAML_BYTES + 1), "<text>")


@pytest.mark.parametrize("text, fragments", [
    ("a: [1, 2\n", ("line 2", "not valid YAML")),
    ("a: !!python/object/apply:os.system [ls]\n", ("line 1", "could not determine a constructor")),
    ("a: \x00\n", ("unacceptable character",)),
    ("day: 2001-02-30\n", ("out of range", "quote it")),
    ("n: " + "9" * 5000 + "\n", ("out of range",)),
    ("{[1]: 2}\n", ("unhashable",)),
    ("- a\n---\n- b\n", ("another document",)),
])
def test_broken_yaml_is_one_line(tmp_path, text, fragments):
    refused(text, tmp_path, *fragments)


def test_files_that_are_not_yaml_text(tmp_path):
    with pytest.raises(UserInputError, match=r"missing\.yaml: no such file; pass a YAML file"):
        load_user_yaml(tmp_path / "missing.yaml", HINT)
    with pytest.raises(UserInputError, match=r": not a regular file; pass a YAML file"):
        load_user_yaml(tmp_path, HINT)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"latin\.yaml: not UTF-8 text \(byte 9\)"):
        load_user_yaml(latin, HINT)


def test_messages_are_one_short_line():
    message = str(UserInputError("f.yaml: field: " + "x" * 10**6 + "\nmore; fix it"))
    assert "\n" not in message and len(message) <= MAX_MESSAGE_CHARS
    assert message.startswith("f.yaml: field: ") and message.endswith("more; fix it")
    loop = []
    loop.append(loop)
    assert len(show(loop)) < 40 and len(show("y" * 10**6)) < 80 and len(show({i: i for i in range(10**4)})) < 80


def test_cluster_files_use_the_same_reader(tmp_path):
    from raysearch.cluster_config import validate_cluster_file

    path = _write(tmp_path, "provider: {type: aws}\nprovider: {type: gcp}\n")
    with pytest.raises(UserInputError, match=r"user\.yaml: line 2: not valid YAML \(duplicate key 'provider'"):
        validate_cluster_file(path)
    with pytest.raises(UserInputError, match=r"user\.yaml: line 1: not valid YAML \(more than 100000 values"):
        validate_cluster_file(_write(tmp_path, BOMB))


# -- properties --------------------------------------------------------------------------------------
def _write(tmp_path, text: str):
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return path


def _loads_or_refuses(text: str, source: str = "doc.yaml"):
    try:
        return parse_user_yaml(text, source)
    except UserInputError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{source}: ") and len(message) <= MAX_MESSAGE_CHARS
        return exc


KEYS = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.booleans(), st.none())
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(["2001-01-01", "1e-4", "yes", "~", "0x1F", "1:30"]))
TREES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5),
                     max_leaves=30)


@FUZZ
@given(tree=TREES, flow=st.booleans())
def test_dumped_trees_load_back_unchanged(tree, flow):
    """Any tree of plain values a user could write round-trips through the reader."""
    assert parse_user_yaml(yaml.safe_dump(tree, default_flow_style=flow), "doc.yaml") == tree


@FUZZ
@given(fanouts=st.lists(st.integers(0, 12), min_size=1, max_size=10),
       leaf=st.sampled_from(["x", "1", "null", "[]", "{}", "'quoted'"]))
def test_alias_chains_load_exactly_when_small(fanouts, leaf):
    """Level i holds fanouts[i] references to level i-1: refused exactly when the expanded document
    passes the node limit, loaded (with shared objects) otherwise."""
    lines = [f"l0: &l0 {leaf}"]
    for i, fanout in enumerate(fanouts, start=1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    text = "\n".join(lines) + "\n"
    size, total = 1, 1 + 2  # l0's value, plus the root and l0's key
    for fanout in fanouts:
        size = 1 + fanout * size
        total += 1 + size
    aliases = sum(fanouts)
    result = _loads_or_refuses(text)
    if aliases > MAX_YAML_ALIASES or total > MAX_YAML_NODES:
        assert isinstance(result, UserInputError)
    else:
        assert isinstance(result, dict) and len(result) == len(fanouts) + 1


TOKENS = st.sampled_from([
    "a", "b", ": ", ":", "- ", "-", "\n", "  ", "\t", "[", "]", "{", "}", ",", "&x ", "*x", "&y ", "*y", "<<: ", "? ",
    "!!str ", "!!int ", "!!python/name:os.system ", "!!binary ", "!!set ", "!!omap ", "'", '"', "|", ">", "#", "---",
    "...", "%YAML 1.1", "1", "1.5", ".nan", "-.inf", "null", "true", "2001-02-30", "0o17", "\\x00", "\x07", "é",
])


@FUZZ
@given(tokens=st.lists(TOKENS, max_size=60))
def test_token_soup_loads_or_is_refused_in_one_line(tokens):
    _loads_or_refuses("".join(tokens))


@FUZZ
@given(tree=TREES, data=st.data())
def test_edited_documents_load_or_are_refused_in_one_line(tree, data):
    """Real documents with lines duplicated (duplicate keys), dropped, or anchored and aliased."""
    lines = yaml.safe_dump({"root": tree, "other": tree}, default_flow_style=False).splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(["duplicate", "drop", "anchor", "alias"]))
        if edit == "duplicate":
            lines.insert(i, lines[i])
        elif edit == "drop" and len(lines) > 1:
            lines.pop(i)
        elif edit == "anchor" and ": " in lines[i]:
            key, _, value = lines[i].partition(": ")
            lines[i] = f"{key}: &z {value}"
        elif edit == "alias" and ": " in lines[i]:
            lines[i] = lines[i].partition(": ")[0] + ": *z"
    _loads_or_refuses("\n".join(lines) + "\n")
