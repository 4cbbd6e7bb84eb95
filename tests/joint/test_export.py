"""The joint model: export of a federated run, scores equal fedrec's evaluation, zero-shot text API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModel

from fedrec.build import build_encoder, build_task, load_datasets
from fedrec.federated.checkpoint import load_checkpoint
from fedrec.federated.local import run_local
from fedrec.federated.local_state import LocalStateStore
from fedrec.joint import Recommender, export_run
from fedrec.joint.export import save_adapter
from fedrec.model.backbone import load_backbone, mean_pool
from fedrec.model.encoder import LoraEncoder
from tests.conftest import compose_test_config
from tests.synthetic import perturb_adapters

pytestmark = pytest.mark.slow


#: the exported run's federation (on the tiny model)
RUN = (
    "platform=video",
    "federation.rounds=2",
    "federation.local_steps=4",
    "federation.eval_max_users=50",
    "train.lr=0.05",
    "train.head_lr=0.5",
)


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished two-round federation (in process) and its exported joint model."""
    tmp = tmp_path_factory.mktemp("joint")
    run_local(compose_test_config(*RUN, data_root=data_root, tmp_path=tmp), tmp / "run")
    return tmp / "run", export_run(tmp / "run")


def test_export_layout(run: tuple[Path, Path]) -> None:
    run_dir, folder = run
    manifest = json.loads((folder / "fedrec.json").read_text())
    assert manifest["platforms"]["video"]["items"] == 1682 and manifest["source"]["adapter"] == "best"
    assert manifest["source"]["round"] == json.loads((run_dir / "results.json").read_text())["federation"]["best_round"]
    for name in ("model", "item_model"):  # standard HF folders: no fedrec code needed
        model = AutoModel.from_pretrained(str(folder / name))
        assert not any("lora" in n for n, _ in model.named_parameters())
    assert torch.load(folder / "platforms" / "video" / "index.pt", weights_only=True).shape[0] == 1682
    assert not list(folder.parent.glob(".joint_model.tmp-*"))  # written atomically


def _pooled(model: torch.nn.Module, tok: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    return mean_pool(out, tok["attention_mask"])


def test_exported_adapter_is_a_peft_folder_equal_to_the_merged_model(run: tuple[Path, Path]) -> None:
    _, folder = run
    manifest = json.loads((folder / "fedrec.json").read_text())
    m = manifest["config"]["model"]
    backbone, tokenizer = load_backbone(m["backbone"], m["tiny_layers"], m["tiny_hidden"])
    tok = tokenizer(["a film about the sea", "jazz records", "x"], padding=True, return_tensors="pt")
    base = _pooled(backbone, tok)
    peft = PeftModel.from_pretrained(backbone, str(folder / manifest["adapter"])).eval()
    with torch.no_grad():
        got, merged = _pooled(peft, tok), _pooled(AutoModel.from_pretrained(str(folder / "model")).eval(), tok)
    torch.testing.assert_close(got, merged, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-4)  # the trained adapter changes the output


def test_save_adapter_loads_with_peft_from_pretrained(tmp_path: Path) -> None:
    """A fresh tiny backbone plus the saved folder gives the encoder's own outputs (fast; no run needed)."""
    bert, tokenizer = load_backbone("tiny", tiny_layers=3, tiny_hidden=32)
    encoder = LoraEncoder(bert, r=4, lora_layers=2)
    perturb_adapters(encoder)
    tok = tokenizer(["red apple", "a longer sentence about the ocean", "tree"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = encoder(tok["input_ids"], tok["attention_mask"])
    folder = save_adapter(encoder, tmp_path / "adapter")
    assert (folder / "adapter_config.json").is_file()
    fresh, _ = load_backbone("tiny", tiny_layers=3, tiny_hidden=32)
    with torch.no_grad():
        base = _pooled(fresh, tok)
        loaded = PeftModel.from_pretrained(fresh, str(folder)).eval()
        got = _pooled(loaded, tok)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-4)


def test_joint_model_scores_equal_fedrec_evaluation(run: tuple[Path, Path], data_root: Path) -> None:
    """The merged export ranks a user's catalogue exactly as the adapter model fedrec evaluates."""
    run_dir, folder = run
    cfg = compose_test_config(*RUN, data_root=data_root, tmp_path=run_dir.parent)
    data = load_datasets(cfg)["video"]
    encoder, tok = build_encoder(cfg.model, cfg.seed)
    adapter = torch.load(run_dir / "best_adapter.pt", weights_only=True)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # a trained adapter
    encoder.load_adapter_state(adapter)
    task = build_task(cfg, data, encoder, tok)
    rnd = json.loads((folder / "fedrec.json").read_text())["source"]["round"]
    run_key = load_checkpoint(run_dir / "checkpoint" / "checkpoint.pt")["run_key"]
    found = LocalStateStore(run_dir / "client_state" / run_key / "video").load(rnd)
    assert found is not None
    task.load_local_state(found[1])
    users = [0, 3, 41, 500, 942]
    expected = task.score_users(users, "test")
    rec = Recommender.load(folder)
    got = rec.score_items("video", [data.history(u, "test") for u in users])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert rec._platform("video")["local"] is not None  # the platform's trained item-ID embeddings are in

    top = rec.recommend_items("video", data.history(3, "test"), k=10)
    assert [r.index for r in top] == [
        int(i) for i in torch.topk(_masked(expected[1], data.history(3, "test")), 10).indices
    ]
    assert not set(r.index for r in top) & set(data.history(3, "test").tolist())


def _masked(scores: torch.Tensor, seen: np.ndarray) -> torch.Tensor:
    out = scores.clone()
    out[torch.as_tensor(seen)] = -torch.inf
    return out


def test_mmr_knob_reranks_the_catalogue(run: tuple[Path, Path]) -> None:
    _, folder = run
    rec = Recommender.load(folder)
    history = np.arange(20)
    plain = rec.recommend_items("video", history, k=10)
    same = rec.recommend_items("video", history, k=10, mmr_lambda=1.0, pool=200)
    diverse = rec.recommend_items("video", history, k=10, mmr_lambda=0.3)
    assert [r.index for r in plain] == [r.index for r in same]
    assert sorted((r.score for r in plain), reverse=True) == [r.score for r in plain]
    assert diverse[0].index == plain[0].index  # MMR's first pick is the most relevant item
    assert len({r.index for r in diverse}) == 10 and not {r.index for r in diverse} & set(history.tolist())


def test_zero_shot_on_raw_text(run: tuple[Path, Path]) -> None:
    """A platform never seen in training: raw history and candidate texts, text scores only."""
    _, folder = run
    rec = Recommender.load(folder)
    history = ["Thinking, Fast and Slow", "The Signal and the Noise"]
    candidates = ["Noise: A Flaw in Human Judgment", "A Cookbook of Soups", "Superforecasting", "Garden Tools"]
    scores = rec.score(history, candidates)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    top = rec.recommend(history, candidates, k=2)
    assert [r.index for r in top] == [int(i) for i in np.argsort(-scores)[:2]]
    assert top[0].text == candidates[top[0].index]
    # the user tower carries the adapter: it differs from the plain item tower on the same text
    user = rec.embed_histories([["Superforecasting"]]) / rec.manifest["scale"]
    assert not torch.allclose(user, rec.embed(["Superforecasting"]))


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a fedrec joint model"):
        Recommender.load(tmp_path)
    with pytest.raises(ValueError, match="not a finished fedrec simulate run"):
        export_run(tmp_path)


def test_merged_minilm_equals_the_adapter_model(tmp_path: Path) -> None:
    """Real MiniLM weights: the merged, saved, reloaded model computes what backbone + LoRA computes."""
    from omegaconf import OmegaConf

    from fedrec.config import ModelConfig
    from fedrec.model.backbone import mean_pool

    model_cfg = OmegaConf.structured(ModelConfig)
    model_cfg.bf16 = False
    encoder, tok = build_encoder(model_cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    encoder.load_adapter_state(
        {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in encoder.adapter_state().items()}
    )
    batch = tok(["Heat (1995) | genres: Action", "a stapler, black"], padding=True, return_tensors="pt")
    expected = encoder(batch["input_ids"], batch["attention_mask"])
    encoder.peft.merge_and_unload().save_pretrained(tmp_path / "model")
    merged = AutoModel.from_pretrained(str(tmp_path / "model"), add_pooling_layer=False).eval()
    with torch.no_grad():
        out = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    got = mean_pool(out.last_hidden_state, batch["attention_mask"])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert merged.config.num_hidden_layers == 6 and merged.config.hidden_size == 384


def test_cli_export_and_recommend(run: tuple[Path, Path], data_root: Path, tmp_path: Path) -> None:
    from tests.cli.test_main import run as fedrec

    run_dir, _ = run
    out = tmp_path / "jm"
    proc = fedrec(["export", f"run_dir={run_dir}", f"joint_model={out}", "adapter=global"], data_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "fedrec.json").read_text())["source"]["adapter"] == "global"
    args = ["recommend", "platform=video", "user=42", "k=5", f"joint_model={out}", f"hydra.run.dir={tmp_path / 'r'}"]
    proc = fedrec(args, data_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top 5 for user 42" in proc.stdout and proc.stdout.count("| genres:") >= 5  # item texts printed
    bad = fedrec([*args[:2], "user=nobody", *args[3:]], data_root, tmp_path)
    assert bad.returncode == 2 and "user 'nobody' is not in platform 'video'" in bad.stderr
