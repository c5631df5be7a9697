"""Reference distillation (loss.distill): the reference texts, the per-step draw, the objective and its effect."""
import dataclasses
import logging

import open_clip
import pytest
import torch

from msta.config import ConfigError, LossCfg, ModelCfg, MstaCfg, StAdapterCfg
from msta.engine.objective import Objective
from msta.engine.references import ReferenceBank, build_reference_bank, read_reference_texts
from msta.losses import classification_loss, reference_distillation_loss
from msta.models import build_model

REFS = ["a red square", "a blue circle", "a green triangle", "a yellow square on the left", "a small blue cross",
        "a large red circle at the top", "a green diamond", "a yellow circle in the centre"]
LABELS = ["moving left", "moving right", "moving up"]
ADAPTED = {"msta": MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 2), scale=0.1),
           "st_adapter": StAdapterCfg(enabled=True, blocks=(1, 2), width=8)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(open_clip.create_model("msta-tiny", pretrained=None).state_dict(), path)
    return str(path)


@pytest.fixture
def ref_file(tmp_path):
    path = tmp_path / "refs.txt"
    path.write_text("# what the frozen model should keep knowing\n\n" + "\n".join(REFS + REFS[:2]) + "\n")
    return path


def _model(weights, **kw):
    torch.manual_seed(1)
    model = build_model(ModelCfg(name="msta-tiny", pretrained=weights, num_frames=4, **kw))
    model.set_class_prompts([f"a video of {c}" for c in LABELS])
    model.freeze_backbone()
    return model


def _clips(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 3, 32, 32, generator=g), torch.randint(0, len(LABELS), (n,), generator=g)


def test_reference_file_is_read_in_order_without_comments_blanks_or_repeats(ref_file, tmp_path):
    assert read_reference_texts(ref_file) == REFS
    with pytest.raises(ConfigError, match=r"loss\.distill_texts=.*missing\.txt: no such file"):
        read_reference_texts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ConfigError, match="has no reference text"):
        read_reference_texts(empty)


def test_skipped_reference_lines_are_counted_and_logged_and_a_bom_is_no_text(tmp_path, caplog):
    path = tmp_path / "refs.txt"
    path.write_text("\ufeff# header\na photo of a dog.\n\n# a note\na photo of a cat.\na photo of a dog.\n",
                    encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="msta.engine.references"):
        assert read_reference_texts(path) == ["a photo of a dog.", "a photo of a cat."]
    assert "2 reference texts; skipped 2 comment line(s) (lines 1, 4) and 1 repeated text(s)" in caplog.text


def test_distill_config_needs_a_reference_file():
    with pytest.raises(ConfigError, match="loss.distill=1.0 needs loss.distill_texts"):
        LossCfg(distill=1.0)
    with pytest.raises(ConfigError, match="loss.distill must be >= 0"):
        LossCfg(distill=-1.0, distill_texts="refs.txt")
    with pytest.raises(ConfigError, match="loss.distill_sample must be >= 1"):
        LossCfg(distill=1.0, distill_texts="refs.txt", distill_sample=0)


def test_draw_depends_on_step_only_and_takes_all_when_few():
    ids = torch.arange(20).view(10, 2)
    bank = ReferenceBank(ids, ids.float() * 10, sample=4, seed=3)
    a, ta = bank.draw(7)
    b, tb = ReferenceBank(ids, ids.float() * 10, sample=4, seed=3).draw(7)  # another rank: same references
    assert torch.equal(a, b) and torch.equal(ta, tb) and a.shape == (4, 2)
    assert torch.equal(ta, a.float() * 10)  # ids and teacher rows stay paired
    assert len({tuple(bank.draw(s)[0][:, 0].tolist()) for s in range(6)}) > 1
    everything = ReferenceBank(ids, ids.float(), sample=10)
    assert torch.equal(everything.draw(5)[0], ids)


def test_bank_holds_the_frozen_text_embeddings(weights, ref_file):
    model = _model(weights, msta=MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 2)))
    bank = build_reference_bank(model, ref_file, sample=3, seed=0)
    assert len(bank) == len(REFS)
    torch.testing.assert_close(bank.teacher, model.encode_text_frozen(model.tokenize(REFS)))
    assert not torch.allclose(bank.teacher, model.encode_text(model.tokenize(REFS)).detach(), atol=1e-5)


def test_objective_adds_beta_times_rd_and_rd_is_zero_for_identity_adapters(weights, ref_file):
    st = StAdapterCfg(enabled=True, blocks=(1, 2), width=8)
    cfg = LossCfg(consistency=False, distill=0.5, distill_texts=str(ref_file), distill_sample=4)
    video, labels = _clips(3, 0)
    batch = {"video": video, "label": labels}

    identity = _model(weights, msta=MstaCfg(enabled=False), st_adapter=st)  # ST-Adapters start as the identity
    bank = build_reference_bank(identity, ref_file, sample=4, seed=0)
    assert Objective(cfg, None, references=bank)(identity, batch, step=2).rd.abs().item() < 1e-6

    model = _model(weights, msta=MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 2)), st_adapter=st)
    out = Objective(cfg, None, references=bank)(model, batch, step=2)
    ids, teacher = bank.draw(2)
    expected_rd = reference_distillation_loss(model.encode_video(video), model.encode_text(ids),
                                              model.encode_video_frozen(video), teacher, model(None).logit_scale)
    torch.testing.assert_close(out.rd, expected_rd)
    torch.testing.assert_close(out.total, out.ce + 0.5 * out.rd)
    assert out.rd.item() > 0 and set(out.as_floats()) == {"loss", "loss_ce", "loss_cc", "loss_rd"}
    off = Objective(dataclasses.replace(cfg, distill=0.0), None, references=bank)(model, batch, step=2)
    assert off.rd is None and torch.equal(off.total, off.ce)


def _train(weights, ref_file, beta, steps=60):
    """A few AdamW steps on random clips; returns the model and the bank."""
    model = _model(weights, **ADAPTED)
    bank = build_reference_bank(model, ref_file, sample=6, seed=0)
    cfg = LossCfg(consistency=False, distill=beta, distill_texts=str(ref_file))
    objective = Objective(cfg, None, references=bank)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    video, labels = _clips(12, 5)
    for step in range(steps):
        loss = objective(model, {"video": video, "label": labels}, step=step)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    return model, bank


def test_distillation_keeps_the_answers_on_references_and_still_fits_the_labels(weights, ref_file):
    free, bank = _train(weights, ref_file, beta=0.0)
    held, _ = _train(weights, ref_file, beta=1.0)
    video, labels = _clips(12, 5)
    unseen, _ = _clips(8, 99)

    @torch.no_grad()
    def drift(model):  # L_RD over all references on clips not trained on
        scale = model(None).logit_scale
        return reference_distillation_loss(model.encode_video(unseen), model.encode_text(bank.ids),
                                           model.encode_video_frozen(unseen), bank.teacher, scale).item()

    @torch.no_grad()
    def fit(model):
        return classification_loss(model.encode_video(video), model.encode_classes(), labels,
                                   model(None).logit_scale).item()

    assert drift(held) < 0.1 * drift(free), (drift(held), drift(free))  # measured: 0.013 vs 1.7
    start = _model(weights, **ADAPTED)
    assert fit(held) < 0.2 * fit(start), (fit(held), fit(start))  # the labels are still learned: 0.002 vs 1.16


def test_shipped_reference_list_reads():
    from tests.engine.helpers import REPO

    texts = read_reference_texts(REPO / "prompts" / "reference_concepts.txt")
    assert len(texts) >= 100 and all(t.startswith("a photo of") for t in texts)
