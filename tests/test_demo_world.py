"""The demo's procedural world and its tiny CLIP (fast: tiny images, one training step)."""
import cv2
import numpy as np
import pytest

from adu_perception.demo import tiny_clip, world


def render(cls, domain, seed, size=64):
    return world.render_object(cls, domain, np.random.default_rng(seed), size)


@pytest.mark.parametrize("domain", world.DOMAINS)
def test_render_is_deterministic_per_seed_and_differs_across_seeds(domain):
    first, again, other = render("car", domain, 5), render("car", domain, 5), render("car", domain, 6)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("domain", world.DOMAINS)
@pytest.mark.parametrize("cls", world.CLASSES)
def test_every_class_and_domain_renders_an_rgb_image(cls, domain):
    image = render(cls, domain, seed=1, size=48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert image.std() > 10  # something was drawn, not a blank canvas


def test_domain_styles_differ_the_way_they_should():
    def saturation(image):
        return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].mean()

    sketches = [render(c, "sketch", s) for c in world.CLASSES for s in range(3)]
    cartoons = [render(c, "cartoon", s) for c in world.CLASSES for s in range(3)]
    assert all(img.mean() > 170 and saturation(img) < 40 for img in sketches)  # grey lines on paper
    assert all((img.max(-1) < 40).mean() > 0.02 for img in cartoons)  # black ink outlines


@pytest.mark.parametrize("domain", ["photo", "billboard"])
def test_roadside_images_are_cut_from_a_road_scene_as_the_drive_frames_them(domain):
    images = [world._roadside_image("car", domain, np.random.default_rng(seed), 64) for seed in range(4)]
    assert all(image is not None and image.shape == (64, 64, 3) and image.dtype == np.uint8 for image in images)
    again = world._roadside_image("car", domain, np.random.default_rng(0), 64)
    assert np.array_equal(images[0], again)  # seeded
    assert not np.array_equal(images[0], images[1])
    # A placement that can never be in view (no tries) gives None, and render_object falls
    # back to a close-up for it.
    assert world._roadside_image("car", domain, np.random.default_rng(0), 64, tries=0) is None


def test_a_share_of_photos_and_billboards_come_from_road_scenes(monkeypatch):
    calls = []
    real = world._roadside_image
    monkeypatch.setattr(world, "_roadside_image", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    for domain in world.DOMAINS:
        for seed in range(40):
            render("bus", domain, seed, size=32)
    assert set(calls) == {"photo", "billboard"}  # never for the drawn domains
    for domain in ("photo", "billboard"):
        share = calls.count(domain) / 40
        assert abs(share - world.ROADSIDE_SHARE) < 0.25


def test_unknown_class_or_domain_is_refused():
    with pytest.raises(ValueError, match="unknown class"):
        render("horse", "photo", 0)
    with pytest.raises(ValueError, match="unknown domain"):
        render("car", "painting", 0)


def test_generate_dataset_writes_the_training_layout(tmp_path):
    root = world.generate_dataset(tmp_path / "world", per_class_domain=2, size=32, seed=3, progress=False)
    for domain in world.DOMAINS:
        for cls in world.CLASSES:
            files = sorted((root / domain / cls).glob("*.png"))
            assert len(files) == 2
    image = cv2.imread(str(root / "billboard" / "bus" / "0001.png"))
    assert image.shape == (32, 32, 3)
    # Each file is the image render_object gives for its own seeded stream.
    expected = world.render_object("bus", "billboard", world.image_rng(3, "billboard", "bus", 1), 32)
    assert np.array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), expected)
    assert set(world.ILLUSTRATION_DOMAINS) | {world.MEMORIZED_DOMAIN} == set(world.DOMAINS)


def test_render_drive_boxes_lie_inside_the_frame_and_mix_real_and_billboard_objects():
    frames = world.render_drive(5, seed=2, size=(320, 180))
    assert len(frames) == 5
    assert not np.array_equal(frames[0][0], frames[-1][0])  # the scene moves
    for frame, objects in frames:
        assert frame.shape == (180, 320, 3) and frame.dtype == np.uint8
        assert "photo" in {o["domain"] for o in objects}
        for o in objects:
            x, y, w, h = o["box"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 320 and y + h <= 180
            assert w == h >= world._MIN_REGION * 180  # square, and not too small to classify
            assert o["class"] in (world.VEHICLES if o["domain"] == "billboard" else world.CLASSES)
    assert {o["domain"] for _, objects in frames for o in objects} == {"photo", "billboard"}
    assert world.render_drive(2, seed=2, size=(320, 180))[1][1] == frames[1][1]  # seeded


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_drive_shows_every_class_and_a_billboard_in_nearly_every_frame(seed):
    frames = world.render_drive(24, seed=seed, size=(320, 180))
    real = {o["class"] for _, objects in frames for o in objects if o["domain"] == "photo"}
    ads = {o["class"] for _, objects in frames for o in objects if o["domain"] == "billboard"}
    assert real == set(world.CLASSES) and ads == set(world.VEHICLES)
    with_billboard = sum(any(o["domain"] == "billboard" for o in objects) for _, objects in frames)
    assert with_billboard >= 0.8 * len(frames)


def test_an_actor_comes_back_with_the_next_class_each_cycle():
    actor = world._Actor(0, "photo", 6.0, (10, 30), 29.0, speed=5.0, classes=("a", "b", "c"), first=1)
    depths = [actor.depth(t) for t in range(12)]
    assert all(10 <= z < 30 for z, _ in depths)
    cycles = [c for _, c in depths]
    assert cycles == sorted(cycles, reverse=True) and len(set(cycles)) == 3
    assert [actor.cls(c) for c in (0, -1, -2, -3)] == ["b", "c", "a", "b"]


def test_occlusion_is_the_covered_fraction_of_a_box():
    box = (0, 0, 10, 10)
    assert world._covered(box, []) == 0.0
    assert world._covered(box, [(-5, -5, 20, 20)]) == 1.0
    assert world._covered(box, [(0, 0, 10, 4.9), (0, 4.9, 10, 10)]) == 1.0  # a union, not a sum
    assert world._covered(box, [(5.1, 0, 10, 10)]) == pytest.approx(0.5, abs=0.05)
    assert world._covered(box, [(20, 20, 30, 30)]) == 0.0


def test_tiny_config_loads_through_open_clip():
    import open_clip
    import torch

    name = tiny_clip.register_config()
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokens = open_clip.get_tokenizer(name)(["a photo of a car."])
    with torch.no_grad():
        assert model.encode_image(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
        assert model.encode_text(tokens).shape == (1, 128)


def test_one_step_pretraining_saves_a_checkpoint_open_clip_loads_back(tmp_path):
    import open_clip
    import torch

    data = world.generate_dataset(tmp_path / "data", per_class_domain=1, size=64, seed=4, progress=False)
    config, checkpoint = tiny_clip.pretrain_tiny_clip(data, tmp_path / "out", epochs=1, seed=0,
                                                      batch_size=32, progress=False)
    assert config.is_file() and checkpoint.is_file()

    open_clip.add_model_config(str(config))
    loaded, _, _ = open_clip.create_model_and_transforms(config.stem, pretrained=str(checkpoint))
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    torch.manual_seed(0)  # the pretraining's own initial weights: one step must have moved them
    initial, _, _ = open_clip.create_model_and_transforms(config.stem)
    # the text tower too, not only the image tower compared below
    assert not torch.equal(saved["text_projection"], initial.text_projection)

    direct, _, _ = open_clip.create_model_and_transforms(config.stem)
    direct.load_state_dict(saved)
    images = torch.randn(3, 3, 64, 64)
    tokens = open_clip.get_tokenizer(config.stem)(["a photo of a bus.", "a sketch of a car."])
    with torch.no_grad():
        for model in (loaded, direct, initial):
            model.eval()
        assert torch.equal(loaded.encode_image(images), direct.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), direct.encode_text(tokens))
        assert not torch.allclose(loaded.encode_image(images), initial.encode_image(images))

    accuracy = tiny_clip.zero_shot_accuracy(config.stem, checkpoint, data, config_path=str(config))
    assert set(accuracy) == set(world.DOMAINS) and all(0 <= a <= 1 for a in accuracy.values())

    closest = tiny_clip.closest_class_captions(config.stem, checkpoint, world.CLASSES, config_path=str(config))
    assert len(set(closest["classes"])) == 2 and set(closest["classes"]) <= set(world.CLASSES)
    assert -1 <= closest["cosine"] < 0.99999  # different words, different text embeddings
    same = tiny_clip.closest_class_captions(config.stem, checkpoint, ["bus", "car", "bus"], config_path=str(config))
    assert same["classes"] == ["bus", "bus"] and same["cosine"] == pytest.approx(1.0, abs=1e-4)


def test_medium_captions_name_each_domain_and_change_what_pretraining_learns(tmp_path):
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(tiny_clip.register_config())
    tokens = tiny_clip._medium_caption_tokens(tokenizer, ["car", "traffic_sign"], ["photo", "sketch"])
    expected = tokenizer(["a real photograph of a car.", "a real photograph of a traffic sign.",
                          "a pencil sketch of a car.", "a pencil sketch of a traffic sign."])
    assert torch.equal(tokens, expected)  # domain-major: caption d * C + c
    with pytest.raises(ValueError, match="no medium caption for domain.*painting"):
        tiny_clip._medium_caption_tokens(tokenizer, ["car"], ["photo", "painting"])

    data = world.generate_dataset(tmp_path / "data", per_class_domain=1, size=64, seed=4, progress=False)
    weights = {}
    for share in (0.0, 1.0):
        _, checkpoint = tiny_clip.pretrain_tiny_clip(data, tmp_path / f"out{share}", epochs=1, seed=0,
                                                     medium_captions=share, progress=False)
        weights[share] = torch.load(checkpoint, weights_only=True)
    assert not torch.equal(weights[0.0]["text_projection"], weights[1.0]["text_projection"])


def test_unmasked_tuning_turns_patch_dropout_off_for_the_last_steps(tmp_path):
    import torch

    # 24 images in batches of 4: 6 steps
    data = world.generate_dataset(tmp_path / "data", per_class_domain=1, size=64, seed=4, progress=False)

    def weights(name, **options):
        _, checkpoint = tiny_clip.pretrain_tiny_clip(data, tmp_path / name, epochs=1, seed=0, batch_size=4,
                                                     progress=False, **options)
        return torch.load(checkpoint, weights_only=True)

    no_dropout = weights("no_dropout", patch_dropout=0.0)
    all_unmasked = weights("all_unmasked", patch_dropout=0.5, unmasked_fraction=1.0)
    tail_unmasked = weights("tail_unmasked", patch_dropout=0.5, unmasked_fraction=0.5)
    masked = weights("masked", patch_dropout=0.5)
    # every step unmasked is plain training; half of them is neither that nor all masked
    assert all(torch.equal(no_dropout[k], all_unmasked[k]) for k in no_dropout)
    key = "visual.proj"
    assert not torch.equal(tail_unmasked[key], no_dropout[key])
    assert not torch.equal(tail_unmasked[key], masked[key])
