"""The latent interface every variant shares, and collectives injected through the constructor."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import models
from models.config import VARIANTS

PRETRAIN_VARIANTS = [v for v in VARIANTS if v != "sttformer"]
TERMS = {
    "mae": set(),
    "mvae": {"kl_loss"},
    "mvqvae": {"codebook_loss", "commitment_loss", "perplexity", "codebook_usage"},
}


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def batch(config, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, config.num_channels, config.num_frames, config.num_joints, config.num_persons, generator=g)


class RecordingCollectives:
    """A fake of two workers' collectives: records every call and answers what a test chooses."""

    def __init__(self, sum_result=None, broadcast_result=None):
        self.sums, self.broadcasts = [], []
        self.sum_result, self.broadcast_result = sum_result, broadcast_result

    def sum(self, tensor):
        self.sums.append(tensor.clone())
        return tensor.clone() if self.sum_result is None else self.sum_result(tensor)

    def broadcast(self, tensor):
        self.broadcasts.append(tensor.clone())
        return tensor.clone() if self.broadcast_result is None else self.broadcast_result(tensor)


def test_every_pretraining_variant_has_a_latent():
    assert set(models.LATENTS) == set(PRETRAIN_VARIANTS)


@pytest.mark.parametrize("variant", PRETRAIN_VARIANTS)
def test_each_latent_returns_decoded_tokens_loss_and_named_terms(variant):
    config = models.preset_config(f"{variant}-tiny")
    latent = models.build_latent(config)
    t_kept, u_kept = config.kept_grid
    h = torch.randn(4, config.encoder_dim, t_kept, u_kept)
    out = latent(h)
    assert isinstance(out, models.LatentOutput)
    assert out.decoded.shape == (4, config.decoder_width, t_kept, u_kept)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert set(out.terms) == TERMS[variant]
    assert all(value.shape == () for value in out.terms.values())


def test_latent_loss_is_the_papers_weighted_term():
    config = models.preset_config("mae-tiny")
    h = torch.randn(2, config.encoder_dim, *config.kept_grid)
    assert models.build_latent(config)(h).loss.item() == 0.0
    gaussian = models.build_latent(config.replace(variant="mvae", beta=0.3))
    out = gaussian(h)
    assert out.loss.item() == pytest.approx(0.3 * out.terms["kl_loss"].item())  # eq. 3
    quantizer = models.build_latent(config.replace(variant="mvqvae", commitment_weight=0.4))
    out = quantizer(h)
    expected = out.terms["codebook_loss"] + 0.4 * out.terms["commitment_loss"]  # eq. 6
    assert out.loss.item() == pytest.approx(expected.item())


@pytest.mark.parametrize("variant", PRETRAIN_VARIANTS)
def test_autoencoder_loss_is_reconstruction_plus_latent_loss(variant):
    model = models.build(f"{variant}-tiny").eval()  # eval: the Gaussian latent uses its mean
    x = batch(model.config)
    plan = model.random_masking(x, torch.Generator().manual_seed(3))
    latent = model.forward_latent(model.forward_encoder(x, plan))
    out = model(x, plan=plan)
    assert out.loss.item() == pytest.approx(out.recon_loss.item() + latent.loss.item(), rel=1e-6)
    assert set(out.latent_terms) == TERMS[variant]


@pytest.mark.parametrize("variant", PRETRAIN_VARIANTS)
def test_metrics_name_the_objective_pretrain_loss(variant):
    model = models.build(f"{variant}-tiny")
    metrics = model(batch(model.config)).metrics()
    assert set(metrics) == {"pretrain_loss", "recon_loss", "full_recon_error"} | TERMS[variant]
    assert all(isinstance(value, float) for value in metrics.values())


def test_injected_collectives_sum_code_counts_in_training_steps_only():
    fake = RecordingCollectives()
    model = models.build("mvqvae-tiny", collectives=fake)
    x = batch(model.config)
    model(x)
    assert len(fake.sums) == 1
    counts = fake.sums[0]
    assert counts.shape == (model.config.codebook_size,)
    tokens = x.shape[0] * x.shape[4] * model.config.kept_grid[0] * model.config.kept_grid[1]
    assert counts.sum().item() == tokens, "one count per kept token of this worker"
    model.eval()
    model(x)
    assert len(fake.sums) == 1, "evaluation shards may differ in length: no collective there"


def test_code_statistics_are_the_summed_counts():
    # The other worker used every code: usage is global, not this worker's.
    fake = RecordingCollectives(sum_result=lambda counts: counts + 1.0)
    model = models.build("mvqvae-tiny", collectives=fake)
    out = model(batch(model.config))
    assert out.latent_terms["codebook_usage"].item() == 1.0


def test_restarted_codes_take_rank_zero_values():
    size, dim = 32, 16
    rank_zero = torch.full((size, dim), 7.0)
    fake = RecordingCollectives(broadcast_result=lambda codebook: rank_zero.clone())
    config = models.preset_config("mvqvae-tiny", restart_dead_codes=True, codebook_size=size)
    model = models.build_from_config(config, collectives=fake)
    with torch.no_grad():
        model.latent.codebook[1:] += 100.0  # only code 0 is ever nearest: the rest are dead
        model.latent.steps_unused.fill_(model.latent.dead_after - 1)
    model(batch(config))
    assert len(fake.broadcasts) == 1
    assert torch.equal(model.latent.codebook.detach(), rank_zero)


def test_local_collectives_are_the_default():
    model = models.build("mvqvae-tiny")
    assert isinstance(model.latent.collectives, models.LocalCollectives)
    assert isinstance(models.LocalCollectives(), models.Collectives)


def test_an_object_without_sum_and_broadcast_is_refused():
    with pytest.raises(TypeError, match="collectives must have sum"):
        models.build("mvqvae-tiny", collectives=object())


def test_classifier_presets_accept_collectives():
    fake = RecordingCollectives()
    model = models.build("sttformer-tiny", collectives=fake, num_classes=4)
    assert model(batch(model.config)).shape == (3, 4)
    assert not fake.sums


@pytest.mark.parametrize("variant", ["mae", "mvae", "mvqvae"])
def test_checkpoints_with_the_old_projection_keys_still_load(variant):
    # Before the latent owned its projection to decoder width it sat at the top as to_decoder.*.
    model = models.build(f"{variant}-tiny")
    state = {k.replace("latent.to_decoder.", "to_decoder."): v for k, v in model.state_dict().items()}
    assert any(k.startswith("to_decoder.") for k in state)
    fresh = models.build(f"{variant}-tiny")
    fresh.load_state_dict(state)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


class TorchCollectives:
    """Collectives over torch.distributed, as a data-parallel trainer injects them."""

    def sum(self, tensor):
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    def broadcast(self, tensor):
        out = tensor.clone()
        dist.broadcast(out, src=0)
        return out


def _quantize_on_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        vq = models.VectorQuantizer(2, 4, restart_dead_codes=True, dead_after=1, collectives=TorchCollectives())
        with torch.no_grad():
            vq.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
        torch.manual_seed(rank)  # each worker would pick other tokens for the dead codes
        near = torch.tensor([0.0, 50.0])[rank]  # worker 0 uses code 0 only, worker 1 code 1 only
        z = near + torch.randn(1, 2, 3, 5, generator=torch.Generator().manual_seed(rank))
        out = vq(z)
        torch.save({"codebook": vq.codebook.detach(), "usage": out.terms["codebook_usage"]}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_workers_share_code_statistics_and_restarted_codes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_quantize_on_worker, args=(port, str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(2)]
    assert [r["usage"].item() for r in results] == [0.5, 0.5], "codes 0 and 1 are used across the workers"
    assert torch.equal(results[0]["codebook"], results[1]["codebook"]), "restarted codes are rank 0's"
    assert torch.equal(results[0]["codebook"][:2], torch.tensor([[0.0, 0.0], [50.0, 50.0]]))
