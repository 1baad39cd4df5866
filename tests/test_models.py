"""Model family: presets, masking, losses against hand computations, gradients, interop."""

import math

import pytest
import torch
import torch.nn.functional as F

import models
from models import ModelConfigError, SkeletonMAE, decoder_blocks
from models.latent import VectorQuantizer, gaussian_kl
from models.masking import gather_kept, random_masking

TINY = ["mae-tiny", "mvae-tiny", "mvqvae-tiny"]


def batch(config, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, config.num_channels, config.num_frames, config.num_joints, config.num_persons, generator=g)
    x[0, ..., 1] = 0  # a sample with a single person, as NTU pads the absent second body with zeros
    return x


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# -- presets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", models.list_presets())
def test_every_preset_builds_and_runs(name):
    config = models.preset_config(name)
    assert config.parameter_count() == models.count_parameters(models.build_from_config(config))
    if name.endswith("ntu60"):
        model = models.build(name)
        info = models.model_info(model)  # counts FLOPs with a real forward at paper scale
        assert info["classifier_params"] == 6_233_588
        assert info["classifier_gflops"] > 0
        return
    model = models.build(name, num_classes=7)
    x = batch(model.config)
    if isinstance(model, SkeletonMAE):
        out = model(x)
        assert out.reconstruction.shape == x.shape
        assert torch.isfinite(out.loss)
        assert model.to_classifier()(x).shape == (3, 7)
    else:
        assert model(x).shape == (3, 7)


@pytest.mark.parametrize("name, paper_millions", [("mae-ntu60", 11), ("mvae-ntu60", 25), ("mvqvae-ntu60", 10)])
def test_paper_presets_match_table8_parameter_counts(name, paper_millions):
    params = models.count_parameters(models.build(name))
    assert abs(params / 1e6 - paper_millions) / paper_millions < 0.15, params


def test_sttformer_has_public_parameter_count():
    assert models.count_parameters(models.build("sttformer-ntu60")) == 6_233_588


def test_decoder_plan_reproduces_paper_table9():
    assert decoder_blocks(9, 256) == (
        (256, 256, 64), (256, 256, 64), (256, 256, 64), (256, 128, 64),
        (128, 128, 32), (128, 64, 32), (64, 64, 16), (64, 64, 16))
    for depth in (2, 5, 7, 11):
        assert len(decoder_blocks(depth, 128)) == depth - 1


def test_overrides_use_search_space_names():
    model = models.build("mvqvae-tiny", codebook_size=7, decoder_depth=4, frame_mask_ratio=0.5)
    assert model.latent.codebook.shape[0] == 7
    assert len(model.decoder.blocks) == 3


# -- masking ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames, tuple_len, frame_ratio, expected_kept", [(24, 4, 0.4, 12), (120, 6, 0.4, 72), (16, 2, 0.9, 2)])
def test_frame_mask_keeps_exact_count_rounded_to_tuples(frames, tuple_len, frame_ratio, expected_kept):
    config = models.preset_config("mae-tiny", num_frames=frames, tuple_len=tuple_len, frame_mask_ratio=frame_ratio)
    assert config.kept_frames == expected_kept
    plan = random_masking(5, frames, 25, config.kept_frames, config.kept_joints, tuple_len)
    assert plan.frame_index.shape == (5, expected_kept)
    assert plan.joint_index.shape == (5, 25 - round(0.4 * 25))
    assert (plan.frame_index.diff(dim=1) > 0).all(), "kept frames stay in time order"
    assert (plan.kept().sum(dim=(1, 2)) == expected_kept * 15).all()
    # The same joints are kept on every kept frame.
    keep = plan.kept()
    for n in range(5):
        rows = keep[n, plan.frame_index[n]]
        assert (rows == rows[0]).all()


def test_masks_differ_between_samples_and_follow_generator():
    a = random_masking(4, 16, 25, 10, 15, 2, generator=torch.Generator().manual_seed(1))
    b = random_masking(4, 16, 25, 10, 15, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.frame_index, b.frame_index)
    assert not torch.equal(a.frame_index[0], a.frame_index[1])


def test_gather_kept_selects_the_planned_joints():
    x = torch.arange(2 * 3 * 16 * 25 * 2, dtype=torch.float32).view(2, 3, 16, 25, 2)
    plan = random_masking(2, 16, 25, 10, 15, 2)
    kept = gather_kept(x, plan)
    n, t, v = 1, 3, 7
    assert kept[n, :, t, v, :].equal(x[n, :, plan.frame_index[n, t], plan.joint_index[n, v], :])


def test_mask_leaving_less_than_one_tuple_is_refused():
    with pytest.raises(ModelConfigError, match="frame_mask_ratio.*fewer than one tuple"):
        models.build("mae-tiny", frame_mask_ratio=0.95)


def test_unknown_preset_and_override_are_named():
    with pytest.raises(ModelConfigError, match="unknown preset 'mae-huge'"):
        models.build("mae-huge")
    with pytest.raises(ModelConfigError, match="unknown model field 'latent_size'"):
        models.build("mvae-tiny", latent_size=3)


# -- size-agnostic blocks ----------------------------------------------------------------------------
def test_block_with_all_tokens_kept_equals_unmasked_block():
    block = models.STTFormerBlock((8, 16, 4), num_tokens=50).eval()
    x = torch.randn(2, 8, 4, 50)
    full_index = torch.arange(50).expand(2, 50)
    assert torch.allclose(block(x), block(x, full_index), atol=1e-6)


def test_kept_tokens_use_their_original_positions():
    block = models.STTFormerBlock((8, 8, 2), num_tokens=50)
    index = torch.tensor([[3, 7, 11], [0, 49, 20]])
    prior = block.attention_prior(index)
    for b in range(2):
        expected = block.attention_bias[0][:, index[b]][:, :, index[b]]
        assert torch.equal(prior[b], expected)
    pe = block.positional_encoding(index)
    assert torch.equal(pe[1, :, 0, 1], block.position_table[49])


# -- losses against hand computations ---------------------------------------------------------------
def test_kl_term_matches_paper_eq3_by_hand():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.1, -0.3], [0.0, 0.7]])
    by_hand = 0.0
    for i in range(2):
        by_hand += sum(0.5 * (math.exp(s) - (1 + s) + m * m) for m, s in zip(mu[i].tolist(), logvar[i].tolist()))
    assert gaussian_kl(mu, logvar).item() == pytest.approx(by_hand / 2, rel=1e-6)


def test_mvae_loss_is_reconstruction_plus_beta_kl():
    model = models.build("mvae-tiny", beta=0.3)
    out = model(batch(model.config))
    kl = out.latent_terms["kl_loss"]
    assert out.loss.item() == pytest.approx(out.recon_loss.item() + 0.3 * kl.item(), rel=1e-6)
    assert out.metrics()["pretrain_loss"] == pytest.approx(out.loss.item())


def test_vq_picks_nearest_code_and_losses_match_hand_computation():
    vq = VectorQuantizer(dim=2, codebook_size=3)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    z = torch.tensor([[0.9, 0.8], [-1.5, 0.2], [0.1, -0.1], [1.2, 1.4]]).t().reshape(1, 2, 1, 4)
    q = vq.quantize(z)
    assert q.indices.flatten().tolist() == [1, 2, 0, 1]
    chosen = vq.codebook.detach()[q.indices.flatten()]
    tokens = z.reshape(2, 4).t()
    expected = ((tokens - chosen) ** 2).mean().item()
    assert q.codebook_loss.item() == pytest.approx(expected)
    assert q.commitment_loss.item() == pytest.approx(expected)
    terms = vq(z).terms
    assert terms["codebook_loss"].item() == pytest.approx(expected)
    assert terms["codebook_usage"].item() == pytest.approx(1.0)
    assert terms["perplexity"].item() == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))


def test_vq_straight_through_gradient_and_stop_gradients():
    vq = VectorQuantizer(dim=4, codebook_size=5)
    z = torch.randn(2, 4, 3, 6, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 6)
    out = vq(z)  # no decoder width: decoded is the quantized tokens themselves
    (out.decoded * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream), "straight-through: d quantized / d z is the identity"
    assert vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0
    z.grad = None
    vq(z).terms["commitment_loss"].backward()  # beta ||z - sg[e]||^2 moves the encoder, never the codebook
    assert z.grad.abs().sum() > 0 and (vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0)
    z.grad = None
    vq(z).terms["codebook_loss"].backward()  # ||sg[z] - e||^2 moves the codebook, never the encoder
    assert z.grad is None or z.grad.abs().sum() == 0
    assert vq.codebook.grad.abs().sum() > 0


def test_mvqvae_loss_is_eq6():
    model = models.build("mvqvae-tiny", commitment_weight=0.4)
    out = model(batch(model.config))
    terms = out.latent_terms
    expected = out.recon_loss + terms["codebook_loss"] + 0.4 * terms["commitment_loss"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_dead_code_restart_reseeds_unused_codes():
    vq = VectorQuantizer(dim=2, codebook_size=4, restart_dead_codes=True, dead_after=1)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
    vq(torch.zeros(1, 2, 1, 3) + 0.1)
    assert (vq.codebook.detach()[1:] - 0.1).abs().max() < 1e-6, "dead codes take encoder outputs"


def test_reconstruction_loss_counts_masked_joints_only():
    model = models.build("mae-tiny")
    x = batch(model.config)
    plan = model.random_masking(x)
    masked = ~plan.kept()
    # A reconstruction right on every masked joint and wrong on every kept one has zero loss.
    recon = torch.where(masked[:, None, :, :, None], x, x + 5.0)
    no_latent = models.LatentOutput(decoded=torch.empty(0), loss=torch.zeros(()), terms={})
    out = model.forward_loss(x, recon, plan, no_latent)
    assert out.recon_loss.item() == 0.0
    assert out.full_recon_error.item() > 0


# -- gradients --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_every_parameter_receives_a_gradient(name):
    model = models.build(name)
    model(batch(model.config)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    classifier = model.to_classifier(num_classes=5)
    classifier.zero_grad()
    F.cross_entropy(classifier(batch(model.config)), torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in classifier.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("name", TINY)
def test_pretraining_step_runs_under_bf16_autocast(name):
    # The GPU recipe pre-trains under bf16 autocast: kept tokens arrive in bf16 while the mask token
    # is an fp32 parameter, and the decoder must still scatter them into one grid.
    model = models.build(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch(model.config))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.decoder.mask_token.grad is not None


def test_classifier_shares_the_pretrained_encoder():
    model = models.build("mvae-tiny")
    classifier = model.to_classifier(num_classes=4)
    assert classifier.encoder is model.encoder
    assert classifier.fc.out_features == 4


# -- reference interop ------------------------------------------------------------------------------
def public_sttformer_forward(sd, x, tuple_len, num_heads=3):
    """The public STTFormer forward written out functionally over a public-layout state dict."""
    def conv_bn(prefix, h, padding=0):
        h = F.conv2d(h, sd[f"{prefix}.0.weight"], sd[f"{prefix}.0.bias"], padding=padding)
        return F.batch_norm(h, sd[f"{prefix}.1.running_mean"], sd[f"{prefix}.1.running_var"],
                            sd[f"{prefix}.1.weight"], sd[f"{prefix}.1.bias"], False, 0.0, 1e-5)

    act = lambda h: F.leaky_relu(h, 0.1)
    n, c, t, v, m = x.shape
    h = x.permute(0, 4, 1, 2, 3).contiguous().view(n * m, c, t, v).view(n * m, c, t // tuple_len, v * tuple_len)
    h = act(conv_bn("input_map", h))
    i = 0
    while f"blocks.{i}.att0s" in sd:
        p = f"blocks.{i}"
        b, ci, tt, u = h.shape
        d = sd[f"{p}.to_qkvs.weight"].shape[0] // (2 * num_heads)
        xs = h + sd[f"{p}.pes.pe"][:, :, :tt]
        q, k = torch.chunk(F.conv2d(xs, sd[f"{p}.to_qkvs.weight"], sd[f"{p}.to_qkvs.bias"]).view(b, 2 * num_heads, d, tt, u), 2, dim=1)
        att = torch.tanh(torch.einsum("nhctu,nhctv->nhuv", q, k) / (d * tt)) * sd[f"{p}.alphas"]
        att = att + sd[f"{p}.att0s"].repeat(b, 1, 1, 1)
        xs = torch.einsum("nctu,nhuv->nhctv", h, att).contiguous().view(b, num_heads * ci, tt, u)
        res = conv_bn(f"{p}.ress", h) if f"{p}.ress.0.weight" in sd else h
        xs = act(conv_bn(f"{p}.out_nets", xs, padding=(0, 2)) + res)
        xs = act(conv_bn(f"{p}.ff_net", xs) + res)
        rest = conv_bn(f"{p}.rest", xs) if f"{p}.rest.0.weight" in sd else xs
        h = act(conv_bn(f"{p}.out_nett", xs, padding=(1, 0)) + rest)
        i += 1
    co = h.shape[1]
    h = h.view(n, m, co, -1).permute(0, 1, 3, 2).contiguous().view(n, -1, co, 1).mean(3).mean(1)
    return F.linear(h, sd["fc.weight"], sd["fc.bias"])


def test_public_layout_checkpoint_round_trips_to_equal_outputs(tmp_path):
    ours = models.build("sttformer-tiny", num_classes=6).eval()
    for module in ours.modules():  # non-trivial BN statistics so the check sees them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    public = models.to_reference_keys(ours.state_dict(), ours.config)
    assert public["blocks.0.att0s"].shape == (1, 3, 50, 50)
    assert public["blocks.1.pes.pe"].shape == (1, 8, 8, 50)
    path = tmp_path / "sttformer_public.pt"
    torch.save(public, path)

    loaded = models.load_reference_sttformer(models.read_state_dict(path), tuple_len=2).eval()
    x = batch(ours.config)
    with torch.no_grad():
        expected = public_sttformer_forward(public, x, tuple_len=2)
        assert torch.allclose(ours(x), expected, atol=1e-5)
        assert torch.allclose(loaded(x), expected, atol=1e-5)
    assert loaded.config.encoder_blocks == ours.config.encoder_blocks


def test_paper_scale_public_layout_has_spec_shapes():
    model = models.build("sttformer-ntu60")
    public = models.to_reference_keys(model.state_dict(), model.config)
    assert public["blocks.2.att0s"].shape == (1, 3, 150, 150)
    assert public["blocks.2.pes.pe"].shape == (1, 64, 20, 150)
    assert public["blocks.2.to_qkvs.weight"].shape == (2 * 3 * 32, 64, 1, 1)
    assert public["blocks.2.out_nets.0.weight"].shape == (128, 3 * 64, 1, 5)
    assert public["blocks.2.out_nett.0.weight"].shape == (128, 128, 3, 1)
    assert "blocks.2.ress.0.weight" in public and "blocks.1.ress.0.weight" not in public


def test_encoder_initialises_from_public_checkpoint_for_pretraining():
    classifier = models.build("sttformer-tiny")
    public = models.to_reference_keys(classifier.state_dict(), classifier.config)
    mae = models.build("mvae-tiny")
    models.load_encoder_weights(mae.encoder, public, "ckpt.pt")
    assert torch.equal(mae.encoder.blocks[1].attention_bias, classifier.encoder.blocks[1].attention_bias)


@pytest.mark.parametrize("layout", ["bare encoder", "classifier", "pre-training model"])
def test_encoder_initialises_from_every_layout_of_ours(layout):
    source = models.build("mvae-tiny")
    torch.manual_seed(1)
    for p in source.encoder.parameters():
        torch.nn.init.normal_(p)
    state = {"bare encoder": source.encoder.state_dict(), "pre-training model": source.state_dict(),
             "classifier": source.to_classifier(num_classes=5).state_dict()}[layout]
    target = models.build("mvae-tiny")
    models.load_encoder_weights(target.encoder, state, "ckpt.pt")
    assert all(torch.equal(v, target.encoder.state_dict()[k]) for k, v in source.encoder.state_dict().items())


def test_checkpoint_with_wrong_shapes_is_refused_with_key_name():
    small = models.build("sttformer-tiny").state_dict()
    wide = models.build("mae-tiny", encoder_blocks=((8, 8, 2), (8, 32, 4), (32, 32, 4)))
    with pytest.raises(ModelConfigError, match=r"ckpt\.pt: encoder.*blocks\.1\.|ckpt\.pt: blocks\.1\..*shape"):
        models.load_encoder_weights(wide.encoder, small, "ckpt.pt")


def test_corrupt_or_pickled_checkpoint_is_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    torch.save(models.build("sttformer-tiny").state_dict(), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    with pytest.raises(ModelConfigError, match="corrupt.pt: cannot be read"):
        models.read_state_dict(corrupt)
    pickled = tmp_path / "code.pt"
    torch.save({"weights": torch.zeros(1), "hook": Exploit()}, pickled)
    with pytest.raises(ModelConfigError, match="code.pt: cannot be read as plain tensors"):
        models.read_state_dict(pickled)
    with pytest.raises(ModelConfigError, match="no such file"):
        models.read_state_dict(tmp_path / "missing.pt")


class Exploit:
    """A pickled object that weights_only loading must refuse."""


@pytest.mark.parametrize("name, paper_gflops", [("mae-ntu60", 42.8), ("mvae-ntu60", 44.9), ("mvqvae-ntu60", 36.3)])
def test_paper_comparable_flops_match_table8(name, paper_gflops):
    """Table 8 counts conv/Linear multiply-accumulates (thop style); ours must land within 5%."""
    info = models.model_info(models.build(name))
    assert abs(info["pretrain_paper_gmacs"] - paper_gflops) / paper_gflops < 0.05
    assert info["pretrain_gflops"] > 2 * info["pretrain_paper_gmacs"]  # attention matmuls counted too


def test_models_import_neither_ray_nor_raysearch():
    import subprocess
    import sys

    code = ("import sys, models; bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'raysearch'}); "
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
