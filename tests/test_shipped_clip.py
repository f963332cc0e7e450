"""The demo's shipped tiny CLIP: compact packing, unpacking to a plain open_clip checkpoint,
and the rule that chose it."""
import json

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from adu_perception.demo import shipped_clip, tiny_clip, world  # noqa: E402


def _random_checkpoint(tmp_path):
    tiny_clip.register_config()
    torch.manual_seed(0)
    model = open_clip.CLIP(**json.loads(tiny_clip.CONFIG_PATH.read_text()))
    path = tmp_path / "trained.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _caption_features(model, captions):
    tokenizer = open_clip.get_tokenizer(tiny_clip.MODEL_NAME)
    with torch.no_grad():
        return model.eval().encode_text(tokenizer(captions))


def test_pack_keeps_the_caption_rows_and_unpack_gives_a_checkpoint_open_clip_loads(tmp_path):
    model, trained = _random_checkpoint(tmp_path)
    packed = shipped_clip.pack(trained, tmp_path / "packed.npz", world.CLASSES)
    config, checkpoint = shipped_clip.unpack(tmp_path / "clip", packed)
    assert (config.name, checkpoint.name) == ("tiny-clip-64.json", "tiny-clip-64.pt")
    loaded, _, _ = open_clip.create_model_and_transforms(tiny_clip.MODEL_NAME, pretrained=str(checkpoint))

    rows = shipped_clip.caption_token_ids(world.CLASSES)
    embedding = loaded.token_embedding.weight.detach()
    assert 0 < len(rows) < 100  # a few dozen of the 49,408 rows
    unused = torch.ones(len(embedding), dtype=torch.bool)
    unused[torch.from_numpy(rows)] = False
    assert embedding[unused].abs().max() == 0  # never-trained rows are stored as zeros
    # every other weight is the trained one, rounded to float16
    for name, value in model.state_dict().items():
        expected = value.half().float()
        if name == shipped_clip.TOKEN_EMBEDDING:
            expected[unused] = 0
        assert torch.equal(loaded.state_dict()[name], expected), name
    captions = [t.format(c.replace("_", " ")) for t in tiny_clip.CAPTION_TEMPLATES for c in world.CLASSES]
    half = open_clip.CLIP(**json.loads(tiny_clip.CONFIG_PATH.read_text()))
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    # the captions use only kept rows, so they embed exactly as with the full table
    assert torch.equal(_caption_features(loaded, captions), _caption_features(half, captions))
    assert packed.stat().st_size < 0.2 * trained.stat().st_size


def test_the_shipped_checkpoint_loads_and_keeps_its_class_captions_apart(tmp_path):
    config, checkpoint = shipped_clip.unpack(tmp_path / "clip")
    closest = tiny_clip.closest_class_captions(tiny_clip.MODEL_NAME, checkpoint, world.CLASSES, str(config))
    assert closest["cosine"] < shipped_clip.RECIPE["merged_cosine"], closest


def test_unpack_names_a_missing_or_mismatched_file(tmp_path):
    with pytest.raises(shipped_clip.ShippedClipError, match="not found: .*nothing.npz"):
        shipped_clip.unpack(tmp_path / "a", tmp_path / "nothing.npz")
    wider = json.loads(tiny_clip.CONFIG_PATH.read_text())
    wider["text_cfg"]["width"] = 64
    wider_config = tmp_path / "tiny-clip-64-wide.json"
    wider_config.write_text(json.dumps(wider))
    with pytest.raises(shipped_clip.ShippedClipError, match="does not fit"):
        shipped_clip.unpack(tmp_path / "b", shipped_clip.PACKED, config_path=wider_config)


def _candidate(seed, cosine, seeds_meeting_goals, right_class):
    return {"seed": seed, "closest_class_captions": {"classes": ["truck", "bus"], "cosine": cosine},
            "validation_demos": {"seeds_meeting_goals": seeds_meeting_goals, "mean_right_class": right_class}}


def test_choose_drops_merged_captions_then_takes_the_most_validation_demos_meeting_the_goals():
    merged_but_best = dict(_candidate(0, 0.9999, 3, 0.95), validation_demos=None)  # build_candidate skips them
    candidates = [merged_but_best, _candidate(1, 0.97, 2, 0.80), _candidate(2, 0.85, 1, 0.90),
                  _candidate(3, 0.90, 2, 0.78)]
    assert shipped_clip.choose(candidates)["seed"] == 1  # 2 of 3 seeds; ties: the higher right class
    with pytest.raises(shipped_clip.ShippedClipError, match="every candidate merged"):
        shipped_clip.choose([merged_but_best])


def test_validation_demos_count_the_seeds_meeting_every_goal_and_average_the_right_class(tmp_path, monkeypatch):
    from adu_perception.demo import pipeline
    from adu_perception.demo.drive import GOALS

    # per seed: billboards suppressed, real reported, right class (only the first meets all three)
    rates = dict(zip(shipped_clip.RECIPE["validation_demo_seeds"],
                     [(0.95, 0.99, 0.83), (0.85, 0.99, 0.90), (0.97, 0.95, 0.71)]))
    seen = []

    def fake_run_demo(options, echo):
        seen.append((options.seed, options.model_config, options.pretrained, options.pretrain_clip))
        return {"drive": {"goals": [{"name": name, "rate": rate, "met": rate >= target}
                                    for (name, _, _, target), rate in zip(GOALS, rates[options.seed])]}}

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    result = shipped_clip.validation_demos(tmp_path, "c.json", "c.pt")
    assert seen == [(seed, "c.json", "c.pt", False) for seed in shipped_clip.RECIPE["validation_demo_seeds"]]
    assert [r["met"] for r in result["per_seed"].values()] == [True, False, False]
    assert result["seeds_meeting_goals"] == 1
    assert result["mean_right_class"] == round((0.83 + 0.90 + 0.71) / 3, 4)
