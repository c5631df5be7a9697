import pytest
import torch

from msta.data import transforms as T


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_train_transform_uses_one_set_of_parameters_per_clip():
    frame = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=gen(0))
    clip = frame.expand(5, 3, 60, 80).contiguous()  # T identical frames
    tr = T.TrainTransform(32, color_jitter=1.0, grayscale=0.5)
    for seed in range(10):
        out = tr(clip, gen(seed))
        assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
        assert torch.equal(out, out[:1].expand_as(out))


def test_train_transform_is_reproducible_from_the_generator():
    clip = torch.randint(0, 256, (4, 3, 60, 80), dtype=torch.uint8, generator=gen(1))
    tr = T.TrainTransform(32)
    assert torch.equal(tr(clip, gen(7)), tr(clip, gen(7)))
    outs = {tr(clip, gen(s)).sum().item() for s in range(8)}
    assert len(outs) > 4


def test_no_flip_keeps_left_right():
    clip = torch.zeros(2, 3, 64, 96, dtype=torch.uint8)
    clip[..., 48:] = 255  # dark left half, bright right half
    for flip, expect_flips in ((False, False), (True, True)):
        tr = T.TrainTransform(32, flip=flip, color_jitter=0.0, grayscale=0.0)
        outs = [tr(clip, gen(s)) for s in range(30)]
        flipped = [bool(out[0, 0, :, 0].mean() > out[0, 0, :, -1].mean()) for out in outs]
        assert any(flipped) == expect_flips


def test_multiscale_crop_box_sizes_and_bounds():
    sides = [240, 210, 180, 158]  # int(240 * scale); none within 3 px of 224, so no snapping
    seen = set()
    for seed in range(300):
        top, left, h, w = T.multiscale_crop_box(240, 320, 224, generator=gen(seed))
        assert h in sides and w in sides and 0 <= top <= 240 - h and 0 <= left <= 320 - w
        assert abs(sides.index(h) - sides.index(w)) <= 1  # aspect distorted by at most one scale step
        seen.add((h, w))
    assert len(seen) == 10  # every allowed pair is drawn
    assert T.multiscale_crop_box(256, 341, 224, generator=gen(0))[2] in (256, 224, 192, 168)  # 224 = 256 * .875


def test_three_crop_positions():
    assert T.three_crop_boxes(224, 300, 224) == [(0, 0, 224, 224), (0, 38, 224, 224), (0, 76, 224, 224)]
    assert T.three_crop_boxes(300, 224, 224) == [(0, 0, 224, 224), (38, 0, 224, 224), (76, 0, 224, 224)]
    assert T.center_crop_box(256, 341, 224) == (16, 58, 224, 224)


def test_eval_three_crops_are_the_left_centre_right_windows():
    cols = torch.arange(100, dtype=torch.uint8).expand(2, 3, 32, 100).contiguous()  # value = column index
    out = T.EvalTransform(32, crops=3, mean=(0, 0, 0), std=(1, 1, 1))(cols)
    assert out.shape == (3, 2, 3, 32, 32)
    firsts = [round(float(v[0, 0, 0, 0]) * 255) for v in out]
    assert firsts == [0, 34, 68]


def test_eval_centre_crop_and_normalisation():
    clip = torch.full((2, 3, 64, 80), 128, dtype=torch.uint8)
    out = T.EvalTransform(32)(clip)
    assert out.shape == (1, 2, 3, 32, 32)
    expected = (128 / 255 - torch.tensor(T.OPENAI_CLIP_MEAN)) / torch.tensor(T.OPENAI_CLIP_STD)
    torch.testing.assert_close(out[0, 0, :, 0, 0], expected.float(), atol=1e-5, rtol=0)


def test_hue_rotation_keeps_gray_and_full_turn_is_identity():
    x = torch.rand(2, 3, 8, 8, generator=gen(0))
    torch.testing.assert_close(T.adjust_hue_yiq(x, 0.0), x, atol=1e-5, rtol=0)
    gray = torch.full((1, 3, 4, 4), 0.4)
    torch.testing.assert_close(T.adjust_hue_yiq(gray, 0.3), gray, atol=1e-5, rtol=0)


def test_bad_input_message():
    with pytest.raises(ValueError, match="permute"):
        T.TrainTransform(32)(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
