"""ModelConfig validation: every field's type and range, the caps, and the model's size, each
refused in one line that names the field, the value and what is allowed, before any tensor."""

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models
from models import ModelConfigError
from models.config import INT_LIMITS, MAX_ACTIVATIONS_PER_SAMPLE, MAX_PARAMETERS

FIELDS = [f.name for f in dataclasses.fields(models.ModelConfig)]


def refusal(**overrides) -> str:
    with pytest.raises(ModelConfigError) as caught:
        models.preset_config("mvqvae-tiny", **overrides)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize("field, value, allowed", [
    ("decoder_depth", 2.5, "integer in [2, 65]"),
    ("decoder_depth", True, "integer"),                 # bools are not ints
    ("num_frames", "48", "integer"),
    ("codebook_size", 1e9, "integer in [1, 65536]"),
    ("codebook_size", 1_000_000_000, "integer in [1, 65536]"),
    ("codebook_size", 0, "integer in [1, 65536]"),
    ("num_classes", 100_001, "integer in [1, 100000]"),
    ("latent_dim", 10**12, "integer in [1, 16384]"),
    ("num_joints", 5000, "integer in [1, 1024]"),
    ("num_persons", 10**12, "integer in [1, 64]"),
    ("beta", math.nan, "finite number >= 0"),
    ("beta", math.inf, "finite number >= 0"),
    ("beta", -0.1, "finite number >= 0"),
    ("beta", -10**400, "finite number >= 0"),           # YAML reads long digit strings as ints
    ("dropout", 10**400, "number in [0, 1)"),
    ("commitment_weight", "0.25", "finite number >= 0"),
    ("frame_mask_ratio", 1.0, "number in [0, 1)"),
    ("frame_mask_ratio", "abc", "number in [0, 1)"),
    ("dropout", math.nan, "number in [0, 1)"),
    ("restart_dead_codes", "maybe", "true or false"),
    ("restart_dead_codes", 1, "true or false"),
    ("variant", ["mae"], "one of sttformer, mae, mvae, mvqvae"),
])
def test_bad_field_is_refused_naming_field_value_and_what_is_allowed(field, value, allowed):
    message = refusal(**{field: value})
    assert f"model field {field}=" in message
    assert repr(value)[:20] in message
    assert allowed in message


def test_an_integer_too_long_to_print_is_still_refused_in_one_line():
    assert "an integer of" in refusal(codebook_size=10**5000)


@pytest.mark.parametrize("blocks", [5, "64,64,16", (), ((8, 8),), ((8, 8, 2.0),), ((8, 8, 2), 5), ((8, 8, -2),)])
def test_malformed_encoder_blocks_show_the_expected_form(blocks):
    message = refusal(encoder_blocks=blocks)
    assert "model field encoder_blocks=" in message
    assert "(in, out, qk_dim)" in message and "e.g. (" in message


def test_encoder_blocks_that_do_not_chain_are_refused():
    assert "block 1 takes 16 channels but block 0 gives 8" in refusal(encoder_blocks=((8, 8, 2), (16, 16, 4)))


def test_encoder_blocks_from_yaml_lists_become_tuples():
    config = models.preset_config("mae-tiny", encoder_blocks=[[8, 8, 2], [8, 16, 4]])
    assert config.encoder_blocks == ((8, 8, 2), (8, 16, 4))
    hash(config)


def test_the_caps_table_covers_every_integer_field():
    ints = {f.name for f in dataclasses.fields(models.ModelConfig) if f.type in ("int", int)}
    assert ints == set(INT_LIMITS)


def test_a_config_over_the_parameter_limit_is_refused_before_any_tensor(monkeypatch):
    def no_allocation(*args, **kwargs):
        raise AssertionError("a model was constructed")

    monkeypatch.setattr(models, "SkeletonMAE", no_allocation)
    monkeypatch.setattr(models, "STTFormerClassifier", no_allocation)
    # Every field inside its cap, the whole too big: A0 is H x U x U per block, U = 8 * 1024.
    with pytest.raises(ModelConfigError, match=f"parameters, over the limit of {MAX_PARAMETERS:,}"):
        models.build("sttformer-ntu60", num_joints=1024, tuple_len=8, num_frames=96)
    with pytest.raises(ModelConfigError, match="parameters, over the limit"):
        models.build("mvae-ntu60", latent_dim=16_384)  # the flatten-Linear grows with latent_dim


def test_a_config_over_the_activation_limit_is_refused():
    with pytest.raises(ModelConfigError, match=f"over the limit of {MAX_ACTIVATIONS_PER_SAMPLE:,}"):
        models.preset_config("sttformer-tiny", num_frames=4096, num_joints=1024, num_persons=64)


@pytest.mark.parametrize("name", ["mae-ntu60", "mvae-ntu60", "mvqvae-ntu60", "sttformer-small", "mvae-small"])
def test_parameter_count_is_exact_for_other_data_shapes(name):
    config = models.preset_config(name, num_joints=20, num_persons=1, num_classes=20, frame_mask_ratio=0.5)
    assert config.parameter_count() == models.count_parameters(models.build_from_config(config))


@pytest.mark.parametrize("joints, classes, persons, expected", [(20, 20, 1, 470_320), (25, 60, 2, 518_680)])
def test_sttformer_small_is_the_public_small_configuration(joints, classes, persons, expected):
    # The reference run of issue 14: public STTFormer, 0.47M parameters, widths 32-128, T=48, P=4.
    config = models.preset_config("sttformer-small", num_joints=joints, num_classes=classes, num_persons=persons)
    assert config.parameter_count() == expected
    assert abs(config.parameter_count() - 470_000) / 470_000 < 0.15
    assert (config.num_frames, config.tuple_len) == (48, 4)
    assert {w for block in config.encoder_blocks for w in block[:2]} == {32, 64, 128}


def test_small_presets_share_the_encoder():
    encoders = {models.preset_config(f"{v}-small").encoder_blocks for v in ("sttformer", "mae", "mvae", "mvqvae")}
    assert len(encoders) == 1


values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**12), st.integers(min_value=10**300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.lists(st.integers(-3, 300), max_size=4), max_size=4),
    st.tuples(st.integers(-3, 300), st.integers(-3, 300), st.integers(-3, 300)),
)


@settings(max_examples=300, deadline=2000)
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_any_override_is_accepted_or_refused_in_one_line(overrides):
    try:
        config = models.preset_config("mvae-tiny", **overrides)
    except ModelConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return
    assert config.parameter_count() <= MAX_PARAMETERS
    hash(config)
