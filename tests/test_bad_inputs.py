"""Bad input, one case per row: exit code != 0, one line on stderr, no traceback, nothing written or changed.

Every case runs in-process against one shared workspace (a tiny teacher, a prepared directory, a
spec, an exported student, a finished training run, broken files). Before and after each case the
workspace is hashed file by file: a refused command must leave it byte-identical and create
nothing, not even a temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml
from tiny import TEXT, save_tiny_teacher, tiny_tokenizer
from train_support import one_thread  # noqa: F401 (autouse fixture)

from headstart.cli import main

TRAIN = "train --student {ST} --data {D} --out {NEW} --tokens 64 --seq-len 16 --batch-size 2 --kd.kind none " \
        "--no-progress"
SEARCH = "search --teacher {T} --data {D} --out {NEW} --params 40k --seq-len 16 --fitness.windows 2 " \
         "--fitness.calibration-windows 2"
CACHE = "cache-logits --teacher {T} --data {D} --out {NEW} --seq-len 16 --no-progress"
EVAL = "eval {ST} --text {TXT} --seq-len 16 --windows 2"
EXTRACT = "extract --teacher {T} --out {NEW}"
SMALL = "--tokens 64 --seq-len 16 --batch-size 2 --kd.kind none"
RETRAIN = "train --student {ST} --data {D} --out {RUN} --tokens 64 --seq-len 16 --batch-size 2 --kd.kind none"

CASES = [
    # prepare
    ("prepare {MISSING}/a.txt --tokenizer {T} --out {NEW} --workers 1", "does not exist"),
    ("prepare {TXT} --out {NEW}", "--tokenizer is required"),
    ("prepare {TXT} --tokenizer {T} --out {FILE} --workers 1", "is a file"),
    ("prepare {TXT} --tokenizer {T} --out {NEW} --workers -1", "workers must be at least 1"),
    ("prepare {TXT} --tokenizer {T} --out {NEW} --split-fractions 0.5,0.6,0.1", "split"),
    ("prepare {TXT} --tokenizer {T} --out {NEW} --val-frac -1", "val_frac must be at least 0"),
    ("prepare {TXT} --tokenizer {T} --out {NEW} --shard-tokens 0", "shard_tokens must be at least 1024"),
    ("prepare {TXT} --tokenizer {MISSING} --out {NEW} --workers 1", "does not exist"),
    ("prepare {TXT} --tokenizer {T} --out {NEW} --builtin bogus", "not one of shakespeare"),
    ("prepare {EMPTY} --tokenizer {T} --out {NEW} --workers 1", "empty"),
    ("prepare {CORPUS} {TXT2} --tokenizer {T} --out {D} --workers 1", "--overwrite"),
    # extract
    (EXTRACT + " --spec {MISSING}/spec.yaml", "does not exist"),
    (EXTRACT + " --mlp 0", "mlp must be at least 1"),
    (EXTRACT + " --mlp 100000", "larger than the teacher's"),
    ("extract --teacher {MISSING} --out {NEW} --mlp 8", "{MISSING}"),
    ("extract --teacher {TXT} --out {NEW} --mlp 8", "not a .gguf"),
    ("extract --teacher {T} --out {FILE} --mlp 8", "is a file"),
    ("extract --teacher {T} --out {FILE}/sub --mlp 8", "is a file"),
    ("extract --teacher {T} --out {ST} --mlp 8", "already exists"),
    (EXTRACT + " --spec {GARBAGE_YAML}", "not valid YAML"),
    (EXTRACT + " --spec {SPEC_OUT_OF_RANGE}", "out of range"),
    (EXTRACT + " --order bogus", "order 'bogus' is not one of"),
    (EXTRACT + " --calib-samples 0", "calib_samples must be at least 1"),
    (EXTRACT + " --weights-dtype bogus", "weights_dtype 'bogus' is not one of"),
    # search
    (SEARCH + " --evolution.evaluations 0", "evolution.evaluations must be at least 1"),
    (SEARCH + " --evolution.population 0", "evolution.population must be at least 2"),
    (SEARCH + " --evolution.time-limit -1", "evolution.time_limit must be above 0"),
    ("search --teacher {T} --data {D} --out {NEW} --params abc", "cannot read the budget 'abc'"),
    (SEARCH + " --fitness.windows 0", "fitness.windows must be at least 1"),
    (SEARCH + " --batch-size 0", "batch_size must be at least 1"),
    (SEARCH + " --tolerance -0.1", "tolerance must be at least 0"),
    (SEARCH + " --fitness.calibration-windows -1", "fitness.calibration_windows must be at least 1"),
    ("search --teacher {T} --data {D} --out {NEW} --params 40k --seq-len 100000", "max_position_embeddings"),
    ("search --teacher {T} --data {MISSING} --out {NEW} --params 40k", "{MISSING}"),
    ("search --teacher {T} --data {D} --out {FILE} --params 40k --seq-len 16", "is a file"),
    (SEARCH + " --space.file {MISSING}/space.yaml", "space"),
    (SEARCH + " --space.file {SPACE_UNKNOWN_KEY}", "bogus"),
    (SEARCH + " --device cuda", "CUDA"),
    (SEARCH + " --device bogus", "device 'bogus' is not a device"),
    # train
    (TRAIN + " --tokens 0", "tokens must be at least 1"),
    (TRAIN + " --tokens lots", "tokens must be an integer"),
    (TRAIN + " --optim.lr -1", "optim.lr must be above 0"),
    (TRAIN + " --optim.grad-accum 0", "optim.grad_accum must be at least 1"),
    (TRAIN + " --kd.alpha 2", "kd.alpha must be at most 1"),
    (TRAIN + " --kd.temperature 0", "kd.temperature must be above 0"),
    (TRAIN + " --validation.windows -1", "validation.windows must be at least 0"),
    (TRAIN + " --runtime.dtype bogus", "runtime.dtype 'bogus' is not one of"),
    (TRAIN + " --seq-len 100000 --tokens 200000", "max_position_embeddings"),
    ("train --student {MISSING} --data {D} --out {NEW} " + SMALL, "{MISSING}"),
    ("train --student {GARBAGE_ST} --data {D} --out {NEW} " + SMALL, "could not load"),
    ("train --student {PICKLE_ST} --data {D} --out {NEW} " + SMALL, "pickled objects"),
    ("train --student {ST} --data {MISSING} --out {NEW} " + SMALL, "{MISSING}"),
    ("train --student {ST} --data {D_NO_VAL} --out {NEW} " + SMALL, "val"),
    (RETRAIN + " --optim.lr 0.5", "--resume"),
    (RETRAIN + " --optim.lr 0.5 --resume", "optim.lr"),
    (TRAIN + " --kd.kind forward", "--teacher"),
    (TRAIN + " --teacher {T} --teacher-cache {MISSING}", "{MISSING}"),
    (TRAIN + " --logging.wandb proj", "wandb"),
    ("train --student {ST} --data {D} --out {FILE} " + SMALL, "is a file"),
    # cache-logits
    (CACHE + " --tokens 0", "tokens must be at least 1"),
    (CACHE + " --k 0", "k must be at least 1"),
    (CACHE + " --split bogus", "split"),
    ("cache-logits --teacher {T} --data {D} --out {FILE} --seq-len 16", "is a file"),
    ("cache-logits --teacher {T} --data {D} --out {NEW} --seq-len 100000", "max_position_embeddings"),
    # eval
    ("eval {MISSING}", "{MISSING}"),
    ("eval {ST} --text {MISSING}/t.txt", "does not exist"),
    (EVAL + " --batch-size 0", "batch_size must be at least 1"),
    (EVAL + " --json {MISSING}/r.json", "{MISSING}"),
    (EVAL + " --json {DIR}", "is a directory"),
    ("eval {GARBAGE_ST} --text {TXT} --seq-len 16", "could not load"),
    ("eval {PICKLE_ST} --text {TXT} --seq-len 16", "pickled objects"),
    ("eval {ST} --data {D} --split bogus --seq-len 16", "split"),
    (EVAL + " --tasks hellaswag", "lm-evaluation-harness"),
    ("eval {ST} --text {TXT} --seq-len 100000", "max_position_embeddings"),
    # inspect
    ("inspect {MISSING}", "{MISSING}"),
    ("inspect {T} --seq-len -100000", "seq_len must be at least 1"),
    ("inspect {TXT}", "not a .gguf"),
    ("inspect {REMOTE_CODE}", "could not load"),
    ("eval {REMOTE_CODE} --text {TXT} --seq-len 16", "could not load"),
    # recipes and config files
    ("run --config {MISSING}/recipe.yaml", "does not exist"),
    ("run --config {RECIPE_TOKENS}", "train.tokens"),
    ("run --config {RECIPE_INPUTS_STRING}", "corpus must be a list of strings"),
    ("run --config {RECIPE_UNKNOWN}", "bogus"),
    ("run --config {RECIPE_SEED}", "seed"),
    ("run --config {RECIPE_EVAL_WINDOWS}", "eval.windows must be at least 1"),
    ("run --config {GARBAGE_YAML}", "YAML"),
    ("demo --search.evolution.evaluations -1", "search.evolution.evaluations must be at least 1"),
    ("train --config {TRAIN_SEED_ABC}", "seed"),
    ("train --config {GARBAGE_YAML}", "YAML"),
]


def _write_recipe(path: Path, ws: dict[str, str], **override) -> str:
    recipe = {"teacher": ws["T"], "out": ws["NEW"], "corpus": [ws["TXT"]], "search": {"params": "40k"},
              "train": {"tokens": 64, "seq_len": 16, "batch_size": 2}}
    for section, values in override.items():
        recipe[section] = values if not isinstance(values, dict) else {**recipe.get(section, {}), **values}
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Placeholder name -> path of everything the cases refer to (built once)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    ws = {"T": str(save_tiny_teacher("smollm2", root / "teacher")), "MISSING": str(root / "missing"),
          "NEW": str(root / "new-output"), "FILE": str(root / "a-file"), "DIR": str(root / "a-dir")}
    Path(ws["FILE"]).write_text("not a directory\n")
    Path(ws["DIR"]).mkdir()
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"doc{i:02d}.txt").write_text((TEXT + f" {i} ") * 6)
    ws["TXT"], ws["CORPUS"] = str(corpus / "doc00.txt"), str(corpus)
    (root / "other.txt").write_text(TEXT * 3)
    ws["TXT2"], ws["EMPTY"] = str(root / "other.txt"), str(root / "empty.txt")
    Path(ws["EMPTY"]).write_text("")
    from headstart.data import prepare

    ws["D"] = str(prepare([str(corpus)], tiny_tokenizer(), root / "data", tokenizer_source=ws["T"], search_frac=1,
                          val_frac=2, workers=1))
    no_val = root / "data-no-val"
    shutil.copytree(ws["D"], no_val)
    manifest = json.loads((no_val / "manifest.json").read_text())
    manifest["splits"].pop("val")
    (no_val / "manifest.json").write_text(json.dumps(manifest))
    ws["D_NO_VAL"] = str(no_val)
    spec = {"layers": [0, 1], "hidden": list(range(64)), "kv_groups": [[0], [0]], "heads": [[[0, 1]], [[0, 1]]],
            "mlp": [list(range(48)), list(range(48))]}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    (root / "spec-oor.yaml").write_text(yaml.safe_dump({**spec, "layers": [0, 99]}))
    ws["SPEC_OUT_OF_RANGE"] = str(root / "spec-oor.yaml")
    ws["GARBAGE_YAML"] = str(root / "garbage.yaml")
    Path(ws["GARBAGE_YAML"]).write_text("{[: this is : not yaml\n")
    ws["ST"] = str(root / "student")
    assert main(["extract", "--teacher", ws["T"], "--spec", str(root / "spec.yaml"), "--out", ws["ST"]]) == 0
    for name, content in (("GARBAGE_ST", b"\x00garbage" * 10), ("PICKLE_ST", None)):
        bad = root / name.lower()
        shutil.copytree(ws["ST"], bad)
        (bad / "model.safetensors").unlink()
        if content is None:  # a pickle that would run code when unpickled without weights_only
            (bad / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit()))
        else:
            (bad / "model.safetensors").write_bytes(content)
        ws[name] = str(bad)
    remote = root / "remote-code"  # a checkpoint whose config needs its own Python code
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {
        "AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    (remote / "configuration_evil.py").write_text("import os\nos.system('touch /tmp/headstart-pwned')\n")
    (remote / "model.safetensors").write_bytes(b"")
    ws["REMOTE_CODE"] = str(remote)
    ws["RUN"] = str(root / "run")
    assert main(["train", "--student", ws["ST"], "--data", ws["D"], "--out", ws["RUN"], "--tokens", "64",
                 "--seq-len", "16", "--batch-size", "2", "--validation.windows", "2", "--kd.kind", "none",
                 "--no-progress"]) == 0
    (root / "space.yaml").write_text(yaml.safe_dump({"bogus": 1}))
    ws["SPACE_UNKNOWN_KEY"] = str(root / "space.yaml")
    ws["RECIPE_TOKENS"] = _write_recipe(root / "r1.yaml", ws, train={"tokens": "lots"})
    ws["RECIPE_INPUTS_STRING"] = _write_recipe(root / "r2.yaml", ws, corpus=ws["TXT"])
    ws["RECIPE_UNKNOWN"] = _write_recipe(root / "r3.yaml", ws, search={"bogus": 1})
    ws["RECIPE_SEED"] = _write_recipe(root / "r4.yaml", ws, seed="abc")
    ws["RECIPE_EVAL_WINDOWS"] = _write_recipe(root / "r5.yaml", ws, eval={"windows": 0})
    (root / "train-seed.yaml").write_text(yaml.safe_dump({"student": ws["ST"], "data": ws["D"], "out": ws["NEW"],
                                                          "seed": "abc"}))
    ws["TRAIN_SEED_ABC"] = str(root / "train-seed.yaml")
    return root, ws


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/headstart-pwned",))


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def test_there_are_enough_cases():
    assert len(CASES) >= 60 and len({c for c, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("command, fragment", CASES, ids=[c.split(" --")[0][:40] + f"-{i}" for i, (c, _) in
                                                          enumerate(CASES)])
def test_bad_input_is_refused_cleanly(command, fragment, workspace, capsys, tmp_path, monkeypatch):
    root, ws = workspace
    monkeypatch.chdir(tmp_path)
    before = _snapshot(root)
    argv = [part.format(**ws) for part in command.split()]
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in "\n".join(err)
    errors = [line for line in err if "%|" not in line]  # progress bars (transformers' weight loading, scans)
    assert len(errors) == 1, err
    assert fragment.format(**ws) in errors[0], errors[0]
    assert _snapshot(root) == before, "the workspace changed"
    assert not list(tmp_path.iterdir()), "files appeared in the working directory"
    assert not Path("/tmp/headstart-pwned").exists()
