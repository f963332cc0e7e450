"""Training stage: model equivalence, losses, InstaPG, optimisation, sampling, metrics,
checkpoints and bad-input messages. Tiny random models, no shared data."""
import itertools

import numpy as np
import pytest
import torch

from adu_perception.training import losses
from adu_perception.training.checkpoint import CheckpointError, load_checkpoint
from adu_perception.training.config import TrainConfig
from adu_perception.training.data import DataError, MultiDomainDataset, few_shot_split, resolve_domains
from adu_perception.training.metrics import average_combinations, harmonic_mean, mem_for_h
from adu_perception.training.model import AduModel, PromptConfig
from adu_perception.training.pipeline import train_and_evaluate
from adu_perception.training.trainer import train, training_losses

from tiny_world import write_tiny_dataset


def make_model(clip, prompts: PromptConfig, n_classes=3, n_domains=3):
    torch.manual_seed(1)
    class_embeddings = torch.randn(n_classes, clip.model.visual.output_dim)
    return AduModel(clip.model.visual, class_embeddings, 100.0, n_domains, prompts).eval()


def test_features_without_prompts_equal_open_clip_encode_image(tiny_clip):
    clip, _ = tiny_clip
    model = make_model(clip, PromptConfig(tokens=0, depth=0))
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ours = model.encoder(images)
        reference = clip.model.encode_image(images)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_prompts_change_features(tiny_clip):
    clip, _ = tiny_clip
    model = make_model(clip, PromptConfig(tokens=4, depth=2))
    with torch.no_grad():
        model.encoder.prompts.normal_(0, 1.0)
        images = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(model.encoder(images), clip.model.encode_image(images), atol=1e-3)


def lower_median(values) -> float:
    ordered = np.sort(np.ravel(values))
    return float(ordered[(len(ordered) - 1) // 2])


def reference_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The authors' MMD, written out: sigma = median cross-domain distance (torch.median:
    the lower middle value for an even count), Gaussian kernel exp(-d^2 / 2 sigma^2),
    biased estimate."""
    sigma = lower_median([np.linalg.norm(a - b) for a in x for b in y])

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma ** 2))

    kxx = np.mean([k(a, b) for a in x for b in x])
    kyy = np.mean([k(a, b) for a in y for b in y])
    kxy = np.mean([k(a, b) for a in x for b in y])
    return kxx + kyy - 2 * kxy


def test_mmd_zero_for_one_distribution_positive_for_shifted():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=generator)
    same = torch.randn(400, 8, generator=generator)
    shifted = torch.randn(400, 8, generator=generator) + 1.5
    assert abs(losses.mmd2_rbf(x, same).item()) < 0.01
    assert losses.mmd2_rbf(x, shifted).item() > 0.1


def test_mmd_matches_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.7, 1.0, size=(9, 5))
    ours = losses.mmd2_rbf(torch.tensor(x), torch.tensor(y)).item()
    assert ours == pytest.approx(reference_mmd2(x, y), rel=1e-6)
    sigma = lower_median(np.linalg.norm(x[:, None] - y[None], axis=-1))
    assert losses.median_bandwidth(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(sigma)


def test_mmd_bandwidth_carries_no_gradient():
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.randn(5, 3) + 1.0
    assert not losses.median_bandwidth(x, y).requires_grad
    losses.mmd2_rbf(x, y).backward()
    sigma = losses.median_bandwidth(x, y)
    x2 = x.detach().clone().requires_grad_(True)
    losses.mmd2_rbf(x2, y, sigma=sigma).backward()  # fixed sigma: the same gradient
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_mean_pairwise_mmd_averages_pairs_of_domains_with_more_than_one_sample():
    rng = np.random.default_rng(1)
    features = torch.tensor(rng.normal(size=(31, 4)))
    domains = torch.tensor([0] * 10 + [2] * 10 + [3] * 10 + [1])  # domain 1: a single sample
    expected = np.mean([reference_mmd2(features[domains == a].numpy(), features[domains == b].numpy())
                        for a, b in itertools.combinations([0, 2, 3], 2)])
    assert losses.mean_pairwise_mmd2(features, domains).item() == pytest.approx(expected, rel=1e-6)
    assert losses.mean_pairwise_mmd2(features[:10], domains[:10]).item() == 0.0
    # One domain of many samples and one of a single sample: no pair qualifies.
    assert losses.mean_pairwise_mmd2(features[20:], domains[20:]).item() == 0.0


def test_forget_loss_is_the_negated_entropy_the_authors_compute():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-3.0, 4.0, 0.0]])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    entropy = -np.mean(np.sum(p * np.log(p + 1e-5), axis=1))
    assert losses.prediction_entropy(logits).item() == pytest.approx(entropy, rel=1e-6)
    assert losses.forget_loss(logits).item() == pytest.approx(-entropy, rel=1e-6)


def test_forget_loss_is_lowest_for_uniform_predictions():
    n_classes = 7
    uniform = torch.zeros(5, n_classes, requires_grad=True)
    value = losses.forget_loss(uniform)
    assert value.item() == pytest.approx(-np.log(n_classes), abs=1e-4)
    value.backward()
    assert uniform.grad.abs().max().item() < 1e-6  # a stationary point
    for seed in range(5):
        peaked = torch.randn(5, n_classes, generator=torch.Generator().manual_seed(seed)) * 3
        assert losses.forget_loss(peaked).item() > value.item()


def test_ddl_subtracts_the_mmd_and_adds_the_domain_ce():
    generator = torch.Generator().manual_seed(2)
    domain_logits = torch.randn(12, 3, generator=generator, requires_grad=True)
    domains = torch.arange(12) % 3
    loss, ce, mmd2 = losses.domain_disentangling_loss(domain_logits, domains, gamma=30.0, lam=0.5)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(domain_logits, domains).item())
    assert mmd2.item() == pytest.approx(losses.mean_pairwise_mmd2(domain_logits, domains).item())
    assert loss.item() == pytest.approx(30.0 * ce.item() - 0.5 * mmd2.item(), rel=1e-6)
    # Minimising the loss with lambda only (gamma 0) raises the MMD: it is maximised.
    mmd_only, _, before = losses.domain_disentangling_loss(domain_logits, domains, gamma=0.0, lam=1.0)
    mmd_only.backward()
    with torch.no_grad():
        stepped = domain_logits - 0.1 * domain_logits.grad
    assert losses.mean_pairwise_mmd2(stepped, domains).item() > before.item()


def test_default_prompt_depth_is_three_quarters_and_never_the_last_block():
    from adu_perception.training.model import default_prompt_depth

    assert default_prompt_depth(12) == 9  # the paper's ViT-B/16
    assert default_prompt_depth(6) == 5   # the proxy
    assert default_prompt_depth(24) == 18
    assert default_prompt_depth(2) == 1
    assert all(default_prompt_depth(n) < n for n in range(2, 40))


def test_instapg_prompts_differ_between_images(tiny_clip):
    clip, _ = tiny_clip
    model = make_model(clip, PromptConfig(tokens=4, depth=2, instapg=True, instapg_layer=2))
    x = model.encoder.visual._embeds(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        prompts = model.encoder.instapg(model.encoder.prompts[1], x[:, 1:])
    assert prompts.shape == (2, 4, 64)
    assert not torch.allclose(prompts[0], prompts[1], atol=1e-4)


def test_instapg_block_follows_the_authors_order(tiny_clip):
    clip, _ = tiny_clip
    model = make_model(clip, PromptConfig(tokens=4, depth=2, instapg=True, instapg_layer=2))
    generator = model.encoder.instapg
    with torch.no_grad():
        for parameter in generator.parameters():  # non-trivial LayerNorm affine parameters
            parameter.add_(torch.randn(parameter.shape) * 0.3)
        prompts = torch.randn(4, 64)
        patches = torch.randn(2, 16, 64)
        q = generator.norm_query(prompts.expand(2, -1, -1))
        kv = generator.norm_kv(patches)
        x = generator.attention(q, kv, kv, need_weights=False)[0] + q
        x = generator.norm_post(x)
        expected = generator.mlp(x) + x
        assert torch.allclose(generator(prompts, patches), expected, atol=1e-6)


def text_prompted_model(clip, class_names=("car", "bus", "sign"), tokens=8, depth=1):
    from adu_perception.training.checkpoint import build_model

    torch.manual_seed(4)
    embeddings = torch.randn(len(class_names), clip.model.visual.output_dim)
    prompts = PromptConfig(tokens=4, depth=2, instapg=True, instapg_layer=2, text_tokens=tokens,
                           text_depth=depth)
    return build_model(clip, embeddings, 3, prompts, class_names)


def test_text_features_equal_open_clip_when_the_context_is_the_template(tiny_clip):
    clip, _ = tiny_clip
    model = text_prompted_model(clip, tokens=4, depth=1)  # context initialised from "a photo of a"
    with torch.no_grad():
        ours = model.text_encoder()
        reference = clip.model.encode_text(clip.tokenizer([f"a photo of a {n}." for n in ("car", "bus", "sign")]))
    assert torch.allclose(ours, reference, atol=1e-5)


def test_text_features_follow_the_text_prompts_and_deep_prompts(tiny_clip):
    clip, _ = tiny_clip
    model = text_prompted_model(clip, tokens=8, depth=2)  # the tiny text tower has 2 blocks
    with torch.no_grad():
        before = model.class_text_features().clone()
        model.text_encoder.context.add_(torch.randn_like(model.text_encoder.context))
        after_context = model.class_text_features().clone()
        model.text_encoder.deep_prompts.add_(torch.randn_like(model.text_encoder.deep_prompts))
        after_deep = model.class_text_features().clone()
    assert not torch.allclose(before, after_context, atol=1e-4)
    assert not torch.allclose(after_context, after_deep, atol=1e-4)
    assert torch.allclose(after_deep.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_forget_weight_scales_only_the_entropy_term(tiny_clip):
    clip, _ = tiny_clip
    model = text_prompted_model(clip, tokens=8, depth=2).eval()
    images = torch.randn(6, 3, 32, 32)
    domains = torch.tensor([0, 0, 1, 1, 2, 2])
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        out = model(images)
        totals = {}
        for weight in (1.0, 0.5, 0.0):
            config = TrainConfig(method="adu", forget=["b"], forget_weight=weight)
            totals[weight], terms = training_losses(out, classes, domains, domains == 0, config, (30.0, 0.5))
    assert terms["for"] < 0  # -H: the entropy is maximised
    assert torch.isclose(totals[1.0] - totals[0.5], 0.5 * terms["for"], atol=1e-5)
    assert torch.isclose(totals[1.0] - totals[0.0], terms["for"], atol=1e-5)
    assert TrainConfig().forget_weight == 1.0  # the authors' balance by default
    with pytest.raises(ValueError, match="--forget-weight"):
        TrainConfig(forget=["b"], forget_weight=-0.5).validate()


def test_only_prompts_instapg_and_domain_head_receive_gradients(tiny_clip):
    clip, _ = tiny_clip
    model = text_prompted_model(clip, tokens=8, depth=2).train()
    images = torch.randn(6, 3, 32, 32)
    domains = torch.tensor([0, 0, 1, 1, 2, 2])
    config = TrainConfig(method="adu", forget=["b"])
    total, _ = training_losses(model(images), torch.tensor([0, 1, 2, 0, 1, 2]), domains,
                               domains == 0, config, (30.0, 0.5))
    total.backward()
    with_gradient = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_gradient == trainable
    assert {n.split(".")[0] for n in trainable} == {"encoder", "text_encoder", "domain_head"}
    assert all(n.startswith(("encoder.prompts", "encoder.instapg.", "text_encoder.context",
                             "text_encoder.deep_prompts", "domain_head.")) for n in trainable), trainable
    assert "text_encoder.context" in trainable
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_folded_text_gives_the_same_outputs(tiny_clip):
    clip, _ = tiny_clip
    model = text_prompted_model(clip).eval()
    images = torch.randn(3, 3, 32, 32)
    folded = model.with_folded_text()
    assert folded.text_encoder is None
    with torch.no_grad():
        a, b = model(images), folded(images)
    for key in ("logits", "domain_logits", "embeddings"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_one_optimisation_step_lowers_the_loss(tiny_clip):
    clip, _ = tiny_clip
    model = make_model(clip, PromptConfig(tokens=4, depth=2, instapg=True, instapg_layer=2))
    model.train()
    config = TrainConfig(method="adu", forget=["b"])
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(12, 3, 32, 32, generator=generator)
    classes = torch.arange(12) % 3
    domains = torch.arange(12) % 3
    memorized = domains == 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(not p.requires_grad for p in model.encoder.visual.parameters())
    optimizer = torch.optim.SGD(trainable, lr=1e-3)
    weights = config.ddl_weights_for(float(model.logit_scale))
    before, _ = training_losses(model(images), classes, domains, memorized, config, weights)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after, _ = training_losses(model(images), classes, domains, memorized, config, weights)
    assert after.item() < before.item()


def test_few_shot_sampler_is_deterministic_per_seed(tiny_data):
    dataset = MultiDomainDataset.scan(tiny_data)
    first = few_shot_split(dataset.samples, 2, seed=5, calibration=2)
    again = few_shot_split(dataset.samples, 2, seed=5, calibration=2)
    other = few_shot_split(dataset.samples, 2, seed=6, calibration=2)
    assert first == again
    assert [s.path for s in first[0]] != [s.path for s in other[0]]
    train, calibration, test = first
    assert len(train) == 2 * 3 * 3 and len(calibration) == 2 * 3 * 3  # k per (class, domain)
    assert not set(train) & set(calibration) and not set(train) & set(test)
    assert not set(calibration) & set(test)
    assert len(train) + len(calibration) + len(test) == len(dataset.samples)
    # The training shots do not depend on the calibration size.
    assert few_shot_split(dataset.samples, 2, seed=5)[0] == train
    # Calibration takes at most half of what is left after the shots.
    assert len(few_shot_split(dataset.samples, 2, seed=5, calibration=100)[1]) == 2 * 3 * 3


def test_mem_for_h_on_hand_made_example():
    # domain 0 memorized: 3 of 4 correct -> Mem 75; domain 1 forgotten: 1 of 4 correct -> For 75.
    labels = np.array([0, 1, 2, 0, 0, 1, 2, 0])
    predictions = np.array([0, 1, 2, 1, 0, 2, 0, 1])
    domains = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = mem_for_h(predictions, labels, domains, memorized=[0], forgotten=[1])
    assert result == pytest.approx({"mem": 75.0, "for": 75.0, "h": 75.0})
    assert harmonic_mean(90.0, 30.0) == pytest.approx(45.0)
    # H is averaged per combination, not recomputed from averaged Mem/For.
    combos = [{"mem": 90.0, "for": 30.0, "h": 45.0}, {"mem": 30.0, "for": 90.0, "h": 45.0}]
    assert average_combinations(combos) == {"mem": 60.0, "for": 60.0, "h": 45.0}


def test_unknown_domain_is_refused_with_its_name(tiny_data):
    dataset = MultiDomainDataset.scan(tiny_data)
    with pytest.raises(DataError, match="unknown domain.*clipart.*photo"):
        resolve_domains(dataset, ["clipart"])


def test_forgetting_every_domain_is_refused(tiny_data):
    dataset = MultiDomainDataset.scan(tiny_data)
    with pytest.raises(DataError, match="cannot forget every domain"):
        resolve_domains(dataset, ["photo", "cartoon", "sketch"])


def test_empty_domain_folder_is_refused(tmp_path):
    write_tiny_dataset(tmp_path, per_group=1)
    (tmp_path / "painting" / "car").mkdir(parents=True)
    with pytest.raises(DataError, match="painting has no images"):
        MultiDomainDataset.scan(tmp_path)


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere")


def tiny_config(data, clip_config, **overrides):
    values = dict(data=str(data), model_config=str(clip_config), method="adu", forget=["sketch"],
                  shots=2, epochs=2, batch_size=8, prompt_tokens=4, prompt_depth=2, lr=0.01,
                  warmup_epochs=0, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_run_writes_checkpoint_reports_and_skips_corrupt_images(tiny_clip, tiny_data, tmp_path,
                                                                       caplog):
    _, clip_config = tiny_clip
    corrupt = tiny_data / "photo" / "car" / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    try:
        metrics = train_and_evaluate(tiny_config(tiny_data, clip_config), tmp_path / "run")
    finally:
        corrupt.unlink()
    assert "skipped 1 unreadable image" in caplog.text
    for name in ("checkpoint.pt", "metrics.json", "metrics.md", "per_domain_accuracy.png",
                 "feature_projection.png"):
        assert (tmp_path / "run" / name).is_file(), name
    payload = load_checkpoint(tmp_path / "run")
    assert payload["complete"] and payload["forgotten_domains"] == ["sketch"]
    assert payload["metrics"]["h"] == pytest.approx(metrics["h"])
    assert set(payload["trainable_state"]) >= {"encoder.prompts", "domain_head.weight"}
    assert any(k.startswith("encoder.instapg.") for k in payload["trainable_state"])


def test_training_is_reproducible_and_resumable(tiny_clip, tiny_data, tmp_path):
    _, clip_config = tiny_clip
    config = tiny_config(tiny_data, clip_config, epochs=2)
    full = train(config, tmp_path / "full", progress=False)["payload"]["trainable_state"]
    again = train(config, tmp_path / "again", progress=False)["payload"]["trainable_state"]
    for key in full:
        assert torch.equal(full[key], again[key]), key
    # Interrupt after one epoch, then resume: same result as the uninterrupted run.
    first = train(config, tmp_path / "first", progress=False, stop_after_epochs=1)["payload"]
    assert first["epoch"] == 1 and not first["complete"]
    assert load_checkpoint(tmp_path / "first")["epoch"] == 1
    resumed = train(config, tmp_path / "first", resume=True, progress=False)["payload"]
    assert resumed["epoch"] == 2 and resumed["complete"]
    for key in full:
        assert torch.allclose(full[key], resumed["trainable_state"][key], atol=1e-6), key


def test_ddl_weights_are_the_papers_at_clip_logit_scale_and_scale_with_it():
    from adu_perception.training.config import TrainConfig

    relative = TrainConfig(forget=["sketch"])  # the authors' run script: gamma 30, lambda 0.5
    assert relative.ddl_weights_for(100.0) == pytest.approx((30.0, 0.5))  # OpenAI CLIP: unchanged
    assert relative.ddl_weights_for(12.5) == pytest.approx((3.75, 0.0625))
    absolute = TrainConfig(forget=["sketch"], ddl_weights="absolute", lam=10.0)
    assert absolute.ddl_weights_for(12.5) == pytest.approx((30.0, 10.0))
    with pytest.raises(ValueError, match="ddl_weights"):
        TrainConfig(forget=["sketch"], ddl_weights="sometimes").validate()


def test_loss_balance_scales_only_the_ddl_terms_with_the_logit_scale(tiny_clip, tiny_data):
    from adu_perception.training.diagnostics import format_balance, loss_gradient_norms
    from adu_perception.training.trainer import prepare_data

    clip, clip_config = tiny_clip
    config = tiny_config(tiny_data, clip_config)
    data = prepare_data(config, clip.image_size)
    relative = loss_gradient_norms(config, clip, data, batches=2)
    absolute = loss_gradient_norms(tiny_config(tiny_data, clip_config, ddl_weights="absolute"), clip, data,
                                   batches=2)
    factor = relative["logit_scale"] / 100.0
    assert (relative["gamma"], relative["lambda"]) == pytest.approx((30 * factor, 0.5 * factor))
    for name in ("L_memorize", "L_forget"):  # same batches, same prompts: unchanged
        assert relative["terms"][name]["grad_norm"] == pytest.approx(absolute["terms"][name]["grad_norm"], rel=1e-4)
    for name in ("gamma * CE_domain", "-lambda * MMD^2"):
        assert absolute["terms"][name]["grad_norm"] > 0
        assert relative["terms"][name]["grad_norm"] == pytest.approx(
            factor * absolute["terms"][name]["grad_norm"], rel=1e-3)
    assert "L_memorize" in format_balance(relative)


def test_domain_separability_of_frozen_features_is_an_accuracy(tiny_clip, tiny_data):
    from adu_perception.training.diagnostics import domain_separability, format_separability
    from adu_perception.training.trainer import prepare_data

    clip, clip_config = tiny_clip
    config = tiny_config(tiny_data, clip_config)
    result = domain_separability(config, clip, prepare_data(config, clip.image_size))
    assert result["chance"] == pytest.approx(1 / len(result["domains"]))
    assert 0 <= result["accuracy"] <= 1 and set(result["per_domain"]) == set(result["domains"])
    assert "nearest domain centroid" in format_separability(result)


def tiny_cli_arguments(tiny_data, clip_config, *extra):
    return ["--data", str(tiny_data), "--model-config", str(clip_config), "--shots", "2",
            "--calibration-shots", "1", "--epochs", "1", "--batch-size", "8", "--prompt-tokens", "2",
            "--workers", "1", "--device", "cpu", *extra]


def test_benchmark_command_averages_over_combinations_then_seeds(tiny_clip, tiny_data, tmp_path, capsys):
    import json

    from adu_perception.cli import main

    _, clip_config = tiny_clip
    out = tmp_path / "bench.json"
    status = main(["benchmark", "unlearning", *tiny_cli_arguments(tiny_data, clip_config),
                   "--forget-sizes", "1", "--seeds", "1,2", "--methods", "zeroshot,adu-mmd-only",
                   "--out", str(out), "--work-dir", str(tmp_path / "work")])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["setup"]["seeds"] == [1, 2]
    entry = report["results"]["adu-mmd-only"]["1"]
    per_seed = entry["per_seed"]
    assert set(per_seed) == {"1", "2"} and all(len(s["combos"]) == 3 for s in per_seed.values())
    for seed_entry in per_seed.values():  # H per combination first, then averaged
        assert seed_entry["h"] == pytest.approx(np.mean([c["h"] for c in seed_entry["combos"]]))
    hs = [per_seed[s]["h"] for s in ("1", "2")]
    assert entry["h"] == pytest.approx(np.mean(hs))
    assert (entry["h_min"], entry["h_max"]) == pytest.approx((min(hs), max(hs)))
    printed = capsys.readouterr().out
    assert "| adu-mmd-only |" in printed and "range over seeds" in printed


def test_train_evaluate_and_resume_commands(tiny_clip, tiny_data, tmp_path, capsys):
    from adu_perception.cli import main

    _, clip_config = tiny_clip
    run = tmp_path / "run"
    arguments = ["train", *tiny_cli_arguments(tiny_data, clip_config), "--forget", "sketch",
                 "--out", str(run)]
    assert main(arguments) == 0
    assert "| adu |" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(run)]) == 0
    assert "| adu |" in capsys.readouterr().out
    # A finished run is not overwritten by accident.
    assert main(arguments) == 2
    assert "already holds a run; --resume continues it, --force replaces it" in capsys.readouterr().err
    # Resuming with another configuration is refused, in one line.
    assert main([*arguments, "--resume", "--lr", "0.5"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    # ... naming what differs; how it is computed (threads, device) may change
    with_workers = [*arguments, "--resume", "--lr", "0.5", "--workers", "2"]
    assert main(with_workers) == 2
    error = capsys.readouterr().err
    assert "lr: " in error and "-> 0.5" in error and "workers" not in error
    assert main([*arguments, "--resume", "--workers", "2"]) == 0
    # An unknown domain names itself.
    assert main(["train", *tiny_cli_arguments(tiny_data, clip_config), "--forget", "clipart",
                 "--out", str(tmp_path / "other")]) == 2
    assert "clipart" in capsys.readouterr().err


def test_split_file_restricts_the_images_used(tiny_clip, tiny_data, tmp_path):
    from adu_perception.training.trainer import prepare_data

    clip, clip_config = tiny_clip
    dataset = MultiDomainDataset.scan(tiny_data)
    downstream = [s.path for s in dataset.samples if s.path.rsplit("/", 1)[-1] in ("0.png", "1.png", "2.png", "3.png")]
    lines = [f"{p}\tdownstream" for p in downstream]
    lines += [f"{s.path}\tpretrain" for s in dataset.samples if s.path not in downstream]
    split_file = tmp_path / "splits.txt"
    split_file.write_text("\n".join(lines) + "\n")
    config = tiny_config(tiny_data, clip_config, split_file=str(split_file), calibration_shots=1)
    data = prepare_data(config, clip.image_size)
    used = {s.path for s in data.train + data.calibration + data.test}
    assert used == set(downstream)
    assert len(data.train) == 2 * 9 and len(data.calibration) == 9 and len(data.test) == 9


# -- bad input: named in one line, before minutes of loading or training ---------------------

def test_unusable_data_is_named_before_training(tiny_clip, tmp_path):
    from adu_perception.training.trainer import prepare_data

    clip, clip_config = tiny_clip
    # every image of one domain unreadable: named, instead of a crash in the first epoch
    root = write_tiny_dataset(tmp_path / "corrupt")
    for file in (root / "sketch").rglob("*.png"):
        file.write_bytes(b"junk")
    with pytest.raises(DataError, match=r"domain\(s\) sketch of .* have no readable training images"):
        prepare_data(tiny_config(root, clip_config), clip.image_size)
    # shots that leave nothing to test on
    root = write_tiny_dataset(tmp_path / "small")
    with pytest.raises(DataError, match="no test images left after the --shots 6 training"):
        prepare_data(tiny_config(root, clip_config, shots=6), clip.image_size)
    # hidden folders are not classes or domains; a class with no image anywhere is refused
    (root / "photo" / ".thumbs").mkdir()
    (root / ".ipynb_checkpoints").mkdir()
    assert MultiDomainDataset.scan(root).classes == ["bus", "car", "sign"]
    for domain in ("photo", "sketch"):
        (root / domain / "giraffe").mkdir()
    with pytest.raises(DataError, match="class folder.s. giraffe .* hold no images"):
        MultiDomainDataset.scan(root)
    # with a split file, classes of another split only are left out of this split's dataset
    split = tmp_path / "split.txt"
    split.write_text("".join(f"{d}/{c}/{i}.png\t{'downstream' if c != 'bus' else 'pretrain'}\n"
                             for d in ("photo", "cartoon", "sketch") for c in ("car", "bus", "sign")
                             for i in range(6)))
    scanned = MultiDomainDataset.scan(root, str(split))
    assert scanned.classes == ["car", "sign"]
    assert {scanned.classes[s.class_index] for s in scanned.samples} == {"car", "sign"}
    with pytest.raises(DataError, match="holds images directly: is .* one level too deep"):
        MultiDomainDataset.scan(root / "photo")
    with pytest.raises(DataError, match="is a file"):
        MultiDomainDataset.scan(root / "photo" / "car" / "0.png")


def test_split_file_problems_are_named(tmp_path):
    from adu_perception.training.data import read_split_file

    binary = tmp_path / "split.bin"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(DataError, match=r"split\.bin is not UTF-8 text"):
        read_split_file(binary, "downstream")
    with pytest.raises(DataError, match="is a folder"):
        read_split_file(tmp_path, "downstream")
    text = tmp_path / "split.txt"
    text.write_text("photo/car/0.png\tpretrain\nphoto/car/1.png\tdownstream\n")
    with pytest.raises(DataError, match=r"no images for split 'train' \(its splits: downstream, pretrain\)"):
        read_split_file(text, "train")


@pytest.mark.parametrize("change, problem", [
    ({"lr": float("nan")}, "lr > 0"),
    ({"gamma": float("inf")}, "--gamma inf: must be a finite number"),
    ({"template": "a photo"}, "must hold exactly one '{}'"),
    ({"template": "a {0} {1}"}, "must hold exactly one '{}'"),
])
def test_training_options_are_checked(tmp_path, change, problem):
    with pytest.raises(ValueError, match=problem):
        tiny_config(tmp_path, tmp_path / "clip.json", **change).validate()


def test_bad_device_and_clip_files_are_named(tmp_path):
    from adu_perception.training.clip_loader import ClipSpec, load_clip
    from adu_perception.training.trainer import resolve_device

    with pytest.raises(ValueError, match="'gpu' is not a device torch knows"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    for content in ("[]", "{}"):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(ValueError, match="is not an open_clip model config: it lacks embed_dim"):
            ClipSpec.from_args(None, None, str(tmp_path / "bad.json"))
    from tiny_world import write_tiny_clip_config

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    spec = ClipSpec.from_args(None, str(garbage), str(write_tiny_clip_config(tmp_path)))
    with pytest.raises(ValueError, match="could not load open_clip model .*garbage.pt"):
        load_clip(spec)


def test_evaluation_refuses_a_data_root_missing_the_runs_images(tmp_path):
    from adu_perception.training.pipeline import load_split

    root = write_tiny_dataset(tmp_path / "data")
    payload = {"config": {"data": str(root)}, "class_names": ["bus", "car", "sign"],
               "domain_names": ["cartoon", "photo", "sketch"], "image_size": 32,
               "test_files": ["photo/car/0.png", "photo/car/99.png"]}
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 test images of this run are missing .*wrong --data"):
        load_split(payload, "test")
