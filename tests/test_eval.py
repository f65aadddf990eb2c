"""``headstart eval`` on an exported checkpoint."""

from __future__ import annotations

import json
import math

import torch
from tiny import TEXT

from headstart.cli import main
from headstart.evaluation import load_checkpoint_dir, perplexity, text_windows


def test_eval_text_samples_and_json(tiny_teacher_dirs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 10)
    out = tmp_path / "r.json"
    code = main(["eval", str(tiny_teacher_dirs["llama"]), "--text", str(text), "--seq-len", "16", "--windows", "4",
                 "--max-new-tokens", "5", "--prompts", "To be|Shall I", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["tokens"] == 4 * 16 and math.isfinite(result["loss"])
    assert abs(result["perplexity"] - math.exp(result["loss"])) < 1e-6 * result["perplexity"]
    assert len(result["samples"]) == 2 and result["samples"][0].startswith("To be")
    model, tok = load_checkpoint_dir(tiny_teacher_dirs["llama"])
    assert result["params"] == sum(p.numel() for p in model.parameters())
    # the reported loss is the mean CE computed independently here
    w = text_windows(tok, TEXT * 10, 16, 4)
    with torch.no_grad():
        logits = model(input_ids=w[:, :-1]).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
    assert abs(perplexity(model, w)["loss"] - float(ref)) < 1e-4
    assert abs(result["loss"] - float(ref)) < 1e-4


def test_eval_bad_inputs(tmp_path, tiny_teacher_dirs, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a model directory" in capsys.readouterr().err
    text = tmp_path / "short.txt"
    text.write_text("hi")
    assert main(["eval", str(tiny_teacher_dirs["llama"]), "--text", str(text), "--max-new-tokens", "0"]) == 2
    assert "fewer than one window" in capsys.readouterr().err
