"""Shared fixtures: a tiny trained ADU run and its exported bundle (random tiny CLIP, generated
multi-domain images; no shared data, no download). Session-scoped: built once, a few seconds."""
import pytest

from tiny_world import write_tiny_clip_config, write_tiny_dataset

TINY_FORGET = ["sketch"]  # tiny_world's domains: photo, cartoon (memorized), sketch (forgotten)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(FrozenClip with random tiny weights, its config path), fresh per test module."""
    import torch

    from adu_perception.training.clip_loader import ClipSpec, load_clip

    torch.manual_seed(0)
    config = write_tiny_clip_config(tmp_path_factory.mktemp("clip"))
    return load_clip(ClipSpec.from_args(None, None, str(config))), config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A tiny generated multi-domain image folder (photo, cartoon, sketch x 3 classes)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Folder of a finished 1-epoch ADU run (checkpoint.pt, metrics) on the tiny world."""
    import torch

    from adu_perception.training.clip_loader import ClipSpec, load_clip
    from adu_perception.training.config import TrainConfig
    from adu_perception.training.pipeline import train_and_evaluate

    root = tmp_path_factory.mktemp("tiny_run")
    # Random CLIP weights saved as a local checkpoint, so that export (and tests) rebuild
    # exactly the model that was trained rather than drawing new random weights.
    clip_config = write_tiny_clip_config(root)
    torch.manual_seed(0)
    clip = load_clip(ClipSpec.from_args(None, None, str(clip_config)))
    weights = root / "tiny-clip.pt"
    torch.save(clip.model.state_dict(), weights)
    config = TrainConfig(data=str(write_tiny_dataset(root / "data")), forget=TINY_FORGET,
                         model_config=str(clip_config), pretrained=str(weights),
                         method="adu", prompt_tokens=4, prompt_depth=2, epochs=1, shots=2,
                         batch_size=8, device="cpu", workers=1)
    run_dir = root / "run"
    train_and_evaluate(config, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory):
    """pathlib.Path of a bundle folder (model.onnx + manifest.json) exported from tiny_run."""
    from adu_perception.export.onnx_export import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("tiny_bundle") / "bundle", progress=False)
