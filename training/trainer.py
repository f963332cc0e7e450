"""ADU training: few-shot prompt tuning of a frozen CLIP with L_memorize + L_forget (+ DDL)."""
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torchvision.transforms import v2
from tqdm import tqdm

from . import losses
from .checkpoint import build_model, load_checkpoint, save_checkpoint, checkpoint_path
from .clip_loader import ClipSpec, FrozenClip, class_text_embeddings, load_clip
from .config import TrainConfig
from .data import DataError, MultiDomainDataset, Sample, few_shot_split, load_images, resolve_domains
from .model import AduModel, PromptConfig, default_prompt_depth
from .rendered import render_copies, rendered_domain_names, resolve_families
from .text_prompts import text_block_count

log = logging.getLogger(__name__)

AUGMENT_MARGIN = 8 / 7  # train images are stored a little larger, then randomly cropped


@dataclass
class PreparedData:
    """Decoded images of one dataset and one few-shot split, reusable across runs."""
    dataset: MultiDomainDataset
    train: List[Sample]
    calibration: List[Sample]  # neither trained on nor tested: for the bundle's thresholds
    test: List[Sample]
    train_images: np.ndarray  # uint8 [N, S', S', 3], S' = image size x AUGMENT_MARGIN
    test_images: np.ndarray   # uint8 [M, S, S, 3]
    skipped: int
    # `--rendered`: forgotten domains drawn from memorised training shots (train split only;
    # their samples are at the end of `train`, after the dataset's own files)
    rendered_domains: List[str] = field(default_factory=list)

    @property
    def domain_names(self) -> List[str]:
        return self.dataset.domains + self.rendered_domains

    def labels(self, split: str):
        samples = self.train if split == "train" else self.test
        return (np.array([s.class_index for s in samples], np.int64),
                np.array([s.domain_index for s in samples], np.int64))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device torch knows (auto, cpu, cuda, cuda:1, "
                         f"...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu or auto")
    return device


def prepare_data(config: TrainConfig, image_size: int,
                 dataset: Optional[MultiDomainDataset] = None) -> PreparedData:
    """The run's images decoded (`dataset`: the scan of config.data, if already made)."""
    dataset = dataset or MultiDomainDataset.scan(config.data, config.split_file, config.split)
    train, calibration, test = few_shot_split(dataset.samples, config.shots, config.seed,
                                              config.calibration_shots)
    _check_every_domain_has(dataset, test, "test images left after the "
                            f"--shots {config.shots} training and --calibration-shots "
                            f"{config.calibration_shots} draws (lower them)")
    train_images, train, skipped_train = load_images(
        dataset.root, train, round(image_size * AUGMENT_MARGIN), config.workers, "load train images")
    test_images, test, skipped_test = load_images(
        dataset.root, test, image_size, config.workers, "load test images")
    for kept, what in ((train, "training"), (test, "test")):
        _check_every_domain_has(dataset, kept, f"readable {what} images "
                                f"({skipped_train + skipped_test} unreadable files skipped)")
    log.info("%s: %d domains, %d classes, %d train / %d calibration / %d test images "
             "(%d unreadable skipped)", dataset.root, len(dataset.domains), len(dataset.classes),
             len(train), len(calibration), len(test), skipped_train + skipped_test)
    data = PreparedData(dataset, train, calibration, test, train_images, test_images,
                        skipped_train + skipped_test)
    if config.rendered != "off":
        add_rendered_training_data(data, config)
    return data


# Settings that change how a run is computed, not what it computes: a resume may differ in them.
RESUMABLE_CHANGES = ("device", "workers")
PATH_SETTINGS = ("data", "split_file", "model_config", "pretrained")


def _changed_settings(before: dict, now: dict) -> list:
    """'name: before -> now' for each setting that would make a resumed run another run."""
    def same(key):
        if key in PATH_SETTINGS and before.get(key) and now.get(key):  # however the path is written
            return Path(before[key]).resolve() == Path(now[key]).resolve()
        return before.get(key) == now.get(key)

    return [f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(set(before) | set(now)) if key not in RESUMABLE_CHANGES and not same(key)]


def _check_every_domain_has(dataset: MultiDomainDataset, samples, what: str) -> None:
    """Refuse, naming them, the domains that have none of `samples` (every domain is scored)."""
    present = {dataset.domains[s.domain_index] for s in samples}
    missing = [d for d in dataset.domains if d not in present]
    if missing:
        raise DataError(f"domain(s) {', '.join(missing)} of {dataset.root} have no {what}")


def add_rendered_training_data(data: PreparedData, config: TrainConfig) -> None:
    """Append rendered copies of the memorised training shots as forgotten domains."""
    families = resolve_families(config.rendered_families)
    _, memorize = resolve_domains(data.dataset, config.forget, config.memorize)
    classes, domains = data.labels("train")
    started = time.time()
    images, new_classes, new_domains, names = render_copies(
        data.train_images, classes, domains, data.dataset.domain_indices(memorize),
        config.rendered, families, len(data.dataset.domains), config.seed)
    data.rendered_domains = rendered_domain_names(config.rendered, families)
    all_names = data.domain_names
    data.train = data.train + [
        Sample(f"{all_names[d]}/{data.dataset.classes[c]}/{name}", int(c), int(d))
        for c, d, name in zip(new_classes, new_domains, names)]
    data.train_images = np.concatenate([data.train_images, images])
    log.info("rendered %d training images (%s, families %s) in %.1f s", len(images),
             config.rendered, ", ".join(families), time.time() - started)


def to_model_input(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 NHWC -> CLIP-normalised float NCHW."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class Augment:
    """Random resized crop + horizontal flip per image (the paper's augmentation)."""

    def __init__(self, size: int):
        self.transform = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                                     v2.RandomHorizontalFlip()])

    def __call__(self, batch_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        chw = batch_uint8_nhwc.permute(0, 3, 1, 2)
        return torch.stack([self.transform(image) for image in chw]).permute(0, 2, 3, 1)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Constant warm-up epochs at warmup_lr, then cosine decay over the remaining steps."""
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return config.warmup_lr
    total = max(1, config.epochs * steps_per_epoch - warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warmup_steps) / total))


def prompt_config(config: TrainConfig, n_blocks: int, n_text_blocks: int) -> PromptConfig:
    """Prompt layout for an encoder of n_blocks image and n_text_blocks text blocks.

    Image: --prompt-depth, by default default_prompt_depth (3/4 of the encoder, as the
    paper's 9 of 12), InstaPG in the last prompted block. Text: --text-prompt-depth (9),
    clipped to the text encoder. Zero-shot: no prompts at all.
    """
    if not config.uses_prompts:
        return PromptConfig(tokens=0, depth=0)
    depth = min(config.prompt_depth or default_prompt_depth(n_blocks), n_blocks)
    if config.prompt_depth and depth < config.prompt_depth:
        log.info("prompt depth %d clipped to the encoder's %d blocks", config.prompt_depth, n_blocks)
    text_depth = min(config.text_prompt_depth, n_text_blocks)
    layer = config.instapg_layer or depth
    return PromptConfig(tokens=config.prompt_tokens, depth=depth, instapg=config.uses_instapg,
                        instapg_layer=layer, text_tokens=config.text_prompt_tokens,
                        text_depth=text_depth)


def training_losses(model_out: dict, classes, domains, memorized_mask, config: TrainConfig,
                    ddl_weights):
    """L = L_memorize - w H_forget (+ gamma CE_domain - lambda MMD^2), w = config.forget_weight
    (1 by default, as the authors), with `ddl_weights` the
    (gamma, lambda) applied (TrainConfig.ddl_weights_for; the ablations zero one of them).
    Returns (total, terms): the unweighted terms as tensors (mem, for = -H, and with DDL
    domain_ce, mmd2)."""
    logits = model_out["logits"]
    forgotten_mask = ~memorized_mask
    terms = {"mem": losses.memorize_loss(logits[memorized_mask], classes[memorized_mask]),
             "for": losses.forget_loss(logits[forgotten_mask])}
    total = terms["mem"] + config.forget_weight * terms["for"]
    if config.uses_ddl:
        gamma = ddl_weights[0] if config.uses_domain_ce else 0.0
        lam = ddl_weights[1] if config.uses_mmd else 0.0
        l_dom, terms["domain_ce"], terms["mmd2"] = losses.domain_disentangling_loss(
            model_out["domain_logits"], domains, gamma, lam)
        total = total + l_dom
    return total, terms


def build_training_model(config: TrainConfig, clip: FrozenClip, data: PreparedData) -> AduModel:
    """The untrained model of a run: prompts laid out by prompt_config, initialised from
    config.seed (independent of what ran before), zero-shot class embeddings kept.

    Built on the CPU, where the text prompts tokenise: a FrozenClip shared by several runs
    (the benchmarks) is left on the GPU, in part, by the run before."""
    clip.model.cpu()
    class_embeddings = class_text_embeddings(clip, data.dataset.classes, config.template)
    prompts = prompt_config(config, len(clip.model.visual.transformer.resblocks),
                            text_block_count(clip.model))
    torch.manual_seed(config.seed)
    return build_model(clip, class_embeddings, len(data.domain_names), prompts,
                       data.dataset.classes)


def make_optimizer(model: AduModel, config: TrainConfig):
    """The authors': one SGD group over every trained tensor at one learning rate. With
    --domain-lr (opt-in) the domain head gets its own group at that rate.
    Returns (optimizer, lr scale per group)."""
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.domain_lr is None:
        groups, scales = [{"params": [p for _, p in trained]}], [1.0]
    else:
        head = [p for n, p in trained if n.startswith("domain_head.")]
        rest = [p for n, p in trained if not n.startswith("domain_head.")]
        groups, scales = [{"params": rest}, {"params": head}], [1.0, config.domain_lr / config.lr]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return optimizer, scales


def train(config: TrainConfig, run_dir, data: Optional[PreparedData] = None,
          clip: Optional[FrozenClip] = None, resume: bool = False, progress: bool = True,
          stop_after_epochs: Optional[int] = None) -> dict:
    """Train one method on one forget/memorize choice; write RUN_DIR/checkpoint.pt.

    Returns the checkpoint payload. `data` and `clip` may be passed in to reuse decoded
    images and the loaded backbone across runs (the benchmark does).
    """
    config.validate()
    device = resolve_device(config.device)
    dataset = None
    if data is None:  # the data and the domain choice first: a typo is named before minutes of loading
        dataset = MultiDomainDataset.scan(config.data, config.split_file, config.split)
        resolve_domains(dataset, config.forget, config.memorize)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    clip = clip or load_clip(ClipSpec.from_args(config.clip, config.pretrained, config.model_config))
    data = data or prepare_data(config, clip.image_size, dataset)
    forget, memorize = resolve_domains(data.dataset, config.forget, config.memorize)
    forget = forget + data.rendered_domains
    model = build_training_model(config, clip, data).to(device)
    prompts = model.encoder.config
    ddl_weights = config.ddl_weights_for(float(model.logit_scale))
    if config.uses_ddl:
        log.info("DDL weights gamma %.3g, lambda %.3g (%s, logit scale %.1f)", *ddl_weights,
                 config.ddl_weights, float(model.logit_scale))

    memorized_ids = [data.domain_names.index(d) for d in memorize]
    forgotten_ids = [data.domain_names.index(d) for d in forget]
    used = np.isin(data.labels("train")[1], memorized_ids + forgotten_ids)
    train_images = torch.from_numpy(data.train_images[used])
    train_classes, train_domains = (torch.from_numpy(a[used]) for a in data.labels("train"))
    is_memorized = torch.from_numpy(np.isin(train_domains.numpy(), memorized_ids))

    payload = {
        "config": config.to_dict(),
        "clip": asdict(clip.spec),
        "image_size": clip.image_size, "mean": list(clip.mean), "std": list(clip.std),
        "class_names": data.dataset.classes, "domain_names": data.domain_names,
        "memorized_domains": memorize, "forgotten_domains": forget,
        "prompt_config": asdict(prompts),
        "ddl_weights_applied": {"gamma": ddl_weights[0], "lambda": ddl_weights[1]},
        "class_embeddings": model.class_embeddings.cpu(),  # zero-shot CLIP's, fixed
        # the dataset's own files only: rendered copies are re-made from them (training.rendered)
        "train_files": [s.path for s in data.train if s.domain_index < len(data.dataset.domains)],
        "rendered_domains": list(data.rendered_domains),
        "test_files": [s.path for s in data.test],
        "calibration_files": [s.path for s in data.calibration],
        "history": [], "epoch": 0, "complete": False, "metrics": None,
    }
    optimizer, lr_scales = make_optimizer(model, config)
    start_epoch = 0
    if resume and not checkpoint_path(run_dir).is_file():
        log.info("no checkpoint in %s to resume: training from the start", run_dir)
    if resume and checkpoint_path(run_dir).is_file():
        previous = load_checkpoint(run_dir)
        changed = _changed_settings(previous["config"], config.to_dict())
        if changed:
            raise ValueError(f"cannot resume {run_dir}: it was trained with other settings "
                             f"({'; '.join(changed)})")
        model.load_trainable_state_dict(previous["trainable_state"])
        if previous.get("optimizer"):
            optimizer.load_state_dict(previous["optimizer"])
        payload["history"], start_epoch = previous["history"], previous["epoch"]
        log.info("resuming %s from epoch %d", run_dir, start_epoch)

    epochs = config.epochs if config.uses_prompts else 0
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    augment = Augment(clip.image_size)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    started = time.time()
    bar = tqdm(range(start_epoch, epochs), desc=f"train {config.method} forget={','.join(forget)}",
               disable=not progress, initial=start_epoch, total=epochs)
    for epoch in bar:
        # Reseeding per epoch makes a resumed run follow the same batches as an uninterrupted one.
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        torch.manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(train_images), generator=generator)
        model.train()
        sums = {}
        for step_in_epoch in range(steps_per_epoch):
            index = order[step_in_epoch * config.batch_size:(step_in_epoch + 1) * config.batch_size]
            lr = learning_rate(config, epoch * steps_per_epoch + step_in_epoch, steps_per_epoch)
            for group, scale in zip(optimizer.param_groups, lr_scales):
                group["lr"] = lr * scale
            images = to_model_input(augment(train_images[index]).to(device), clip.mean, clip.std)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = model(images)
            total, terms = training_losses(
                {k: v.float() for k, v in out.items()}, train_classes[index].to(device),
                train_domains[index].to(device), is_memorized[index].to(device), config, ddl_weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            for key, value in {**terms, "total": total}.items():
                sums[key] = sums.get(key, 0.0) + value.item() / steps_per_epoch
        payload["history"].append({"epoch": epoch + 1, **{k: round(v, 5) for k, v in sums.items()}})
        bar.set_postfix(loss=f"{sums['total']:.3f}")
        payload.update(epoch=epoch + 1, trainable_state=model.trainable_state_dict(),
                       optimizer=optimizer.state_dict())
        save_checkpoint(checkpoint_path(run_dir), payload)  # resumable after every epoch
        if stop_after_epochs and epoch + 1 - start_epoch >= stop_after_epochs and epoch + 1 < epochs:
            return {"payload": payload, "model": model.eval(), "clip": clip, "data": data}
    payload.update(epoch=epochs, complete=True, trainable_state=model.trainable_state_dict(),
                   optimizer=None, train_seconds=round(time.time() - started, 1))
    return {"payload": payload, "model": model.eval(), "clip": clip, "data": data}
