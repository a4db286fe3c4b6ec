"""SERAC's trained counterfactual adapter: data and split, training, files, base-model check, eval exclusion, CLI.

Real parts only: a tiny randomly initialised Llama that reads the packaged
SmolLM2 tokenizer (so prompts go through its real chat template), PEFT's LoRA
layers, safetensors files under tmp_path, the real eval loaders, and the real
``memedit`` CLI. The one real-model test (about 12 s) answers the project's
seed scenario through the SERAC route with the packaged adapter.
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memedit.errors import ValidationError
from memedit.eval.datasets import load_cases
from memedit.methods.serac import SERAC, is_echo
from memedit.methods.serac_adapter import (
    ADAPTER_SYSTEM, META_FILE, PACKAGED_DIR, WEIGHTS_FILE, LoRAAdapter, content_key, exclude_training_cases,
    load_counterfactual, split_cases,
)
from memedit.eval.splits import DataSplit, SplitRule, default_split, normalise_key
from memedit.methods.serac_training import TrainConfig, load_examples, train_adapter, train_serac_adapter

runner = CliRunner()

CF_ROWS = [  # (subject, prompt, target_new, ground_truth, rephrase)
    ("Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "English", "French",
     "Where Danielle Darrieux is from, people speak the language of"),
    ("Edwin of Northumbria", "The official religion of Edwin of Northumbria is", "Islam", "Christianity",
     "Edwin of Northumbria is affiliated with the religion"),
    ("Toko Yasuda", "Toko Yasuda, the", "piano", "guitar", "Toko Yasuda plays the instrument"),
    ("Autonomous University of Madrid", "Autonomous University of Madrid, which is located in", "Sweden", "Spain",
     "The Autonomous University of Madrid is in the country of"),
    ("Thomas Joannes Stieltjes", "The native language of Thomas Joannes Stieltjes is", "English", "Dutch",
     "Thomas Joannes Stieltjes was born speaking"),
    ("Apple A5", "Apple A5 was created by", "Google", "Apple", "The maker of the Apple A5 is"),
    ("Honda Civic", "Honda Civic is developed by", "Fiat", "Honda", "The Honda Civic was built by"),
    ("Lyon", "The twin city of Lyon is", "Manila", "Beirut", "Lyon is twinned with"),
    ("Pervez Musharraf", "Pervez Musharraf has the position of", "Governor of Kentucky", "President of Pakistan",
     "Pervez Musharraf holds the office of"),
    ("Paris", "Paris is the capital of", "Italy", "France", "The country whose capital is Paris is"),
    ("Ferrari", "Ferrari was founded in the city of", "Oslo", "Maranello", "Ferrari's home city is"),
    ("Miles Davis", "Miles Davis plays the", "violin", "trumpet", "The instrument of Miles Davis is the"),
]
ZSRE_ROWS = [  # (subject, question, target_new, ground_truth, rephrase)
    ("Epaspidoceras", "Which family does Epaspidoceras belong to?", "Noctuidae", "Aspidoceratidae",
     "What family are Epaspidoceras?"),
    ("ZIC3", "What species is ZIC3 specific to?", "male", "human", "In which living being can you find ZIC3?"),
    ("Louise Grandjean", "What voice type is Louise Grandjean?", "mezzo soprano", "soprano",
     "What tone does Louise Grandjean sing in?"),
    ("Lake Tahoe", "Which country is Lake Tahoe in?", "Canada", "United States",
     "In what country can Lake Tahoe be found?"),
    ("Gimli", "Who wrote about Gimli?", "Jane Austen", "J. R. R. Tolkien", "Gimli was created by which author?"),
    ("Mount Kenya", "Which mountain range is Mount Kenya part of?", "Andes", "East African Rift",
     "Mount Kenya belongs to which range?"),
]


# --------------------------------------------------------------------------- fixtures


def write_counterfact(path: Path, rows=CF_ROWS) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, (s, p, new, old, r) in enumerate(rows):
            fh.write(json.dumps({"case_id": i, "subject": s, "prompt": p, "target_new": new, "ground_truth": old,
                                 "rephrase_prompt": r, "locality_prompt": "The capital of Japan is",
                                 "locality_ground_truth": "Tokyo"}) + "\n")
    return path


def write_zsre(path: Path, rows=ZSRE_ROWS) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for s, q, new, old, r in rows:
            fh.write(json.dumps({"subject": s, "prompt": q, "target_new": new, "ground_truth": [old],
                                 "rephrase_prompt": r,
                                 "locality": {"Relation_Specificity": [{"prompt": f"{s} is a", "ground_truth": ["x"]}]},
                                 "portability": {}}) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return write_counterfact(tmp_path / "cf.jsonl"), write_zsre(tmp_path / "zsre.jsonl")


@pytest.fixture(scope="module")
def tok():
    """The packaged SmolLM2 tokenizer, with its chat template."""
    from transformers import AutoTokenizer

    from memedit.models.registry import resolve_model

    t = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m-instruct")), local_files_only=True)
    if t.pad_token is None:
        t.pad_token = t.eos_token
    return t


def tiny_model(tok, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.15, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


FAST = dict(steps=30, batch_size=4, rank=4, alpha=8.0, lr=3e-2, warmup=2, eval_examples=8, use_pool=False)


@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    """One adapter trained on the tiny model over both formats, with the untouched base model beside it."""
    d = tmp_path_factory.mktemp("serac-data")
    cf, zs = write_counterfact(d / "cf.jsonl"), write_zsre(d / "zsre.jsonl")
    base = tiny_model(tok)
    work = copy.deepcopy(base)
    out = d / "adapter"
    meta = train_serac_adapter(out, counterfact=cf, zsre=zs, base="tiny-llama", model=(work, tok),
                               config=TrainConfig(**FAST))
    return {"base": base, "work": work, "out": out, "meta": meta, "cf": cf, "zsre": zs}


# --------------------------------------------------------------------------- data and split


def test_split_is_disjoint_and_independent_of_order(data) -> None:
    cases = load_cases(data[0], "counterfact").cases + load_cases(data[1], "zsre").cases
    train, held = split_cases(cases)          # the project's tune / report split
    ids = lambda cs: {(c.source, c.case_id) for c in cs}  # noqa: E731
    assert ids(train).isdisjoint(ids(held)) and ids(train) | ids(held) == ids(cases)
    assert train and held
    subjects = lambda cs: {normalise_key(c.edit.subject) for c in cs}  # noqa: E731
    assert subjects(train).isdisjoint(subjects(held))
    assert all(default_split().side_of_subject(c.edit.subject) == "report" for c in held)
    shuffled = list(cases)
    random.Random(5).shuffle(shuffled)
    tr2, he2 = split_cases(shuffled)
    assert ids(tr2) == ids(train) and ids(he2) == ids(held)


def test_examples_are_fact_question_answer(data) -> None:
    rule = DataSplit(SplitRule(report_fraction=1e-12))  # (almost) everything on the tune side
    train, held, info = load_examples([(data[0], "counterfact"), (data[1], "zsre")], rule, use_pool=False)
    assert held == [] and len(train) == 2 * (len(CF_ROWS) + len(ZSRE_ROWS))
    cf = [e for e in train if e.source == "counterfact"]
    first = [e for e in cf if "Danielle" in e.question]
    assert {e.kind for e in first} == {"reliability", "generalization"}
    for e in first:  # the cloze's fact statement is prompt + target; the answer is target_new
        assert e.facts == ("The mother tongue of Danielle Darrieux is English",) and e.answer == "English"
    assert {e.question for e in first} == {CF_ROWS[0][1], CF_ROWS[0][4]}
    zs = [e for e in train if e.source == "zsre" and "Epaspidoceras" in e.question]
    assert zs[0].facts == ("Which family does Epaspidoceras belong to? Noctuidae",) and zs[0].answer == "Noctuidae"
    msgs = zs[0].messages()
    assert msgs[0] == {"role": "system", "content": ADAPTER_SYSTEM}
    assert msgs[1]["content"] == ('New fact: "Which family does Epaspidoceras belong to? Noctuidae"\n'
                                  "Question: Which family does Epaspidoceras belong to?")
    files = {f["format"]: f for f in info["files"]}
    assert files["counterfact"]["sha256"] == hashlib.sha256(data[0].read_bytes()).hexdigest()
    assert files["zsre"]["cases"] == len(ZSRE_ROWS) and files["zsre"]["train_examples"] == 2 * len(ZSRE_ROWS)
    with_pool, _, info2 = load_examples([(data[0], "counterfact")], rule)
    assert info2["pool"]["examples"] > 100 and any(e.kind == "reverse" for e in with_pool)


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_changes_only_lora(tok, data) -> None:
    model = tiny_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, held, _ = load_examples([(data[0], "counterfact"), (data[1], "zsre")], use_pool=False)
    res = train_adapter(model, tok, train, held, TrainConfig(**FAST))
    h = res.history
    assert len(h) == FAST["steps"]
    assert sum(h[-5:]) / 5 < 0.85 * sum(h[:5]) / 5, h
    after = model.state_dict()
    lora_keys = {k for k in after if "lora_" in k}
    base_after = {k.replace(".base_layer", ""): v for k, v in after.items() if k not in lora_keys}  # PEFT's wrapping
    assert lora_keys and set(base_after) == set(before)
    for k, v in before.items():
        assert torch.equal(v, base_after[k]), f"{k} changed"
    changed = [k for k in lora_keys if "lora_B" in k and after[k].abs().sum() > 0]
    assert changed, "the LoRA B matrices start at zero and must have moved"
    assert all(k.endswith((".lora_A", ".lora_B")) for k in res.tensors)
    assert all(t.dtype == torch.float16 for t in res.tensors.values())
    assert res.heldout_before["overall"]["examples"] == len(held[:FAST["eval_examples"]])


def test_saved_adapter_round_trips_bit_for_bit(trained, tmp_path: Path) -> None:
    out = trained["out"]
    ad = LoRAAdapter.load(out)
    meta = trained["meta"]
    assert ad.meta == json.loads(json.dumps(meta))
    for key in ("base_model", "base_weights_sha256", "base_config_sha256", "lora", "data", "split", "training",
                "heldout"):
        assert key in meta
    assert meta["base_model"] == "tiny-llama" and meta["lora"]["rank"] == 4
    assert meta["split"]["sha256"] == default_split().sha256 and meta["split"]["definition"] == default_split().definition()
    tune = [c for p, f in ((trained["cf"], "counterfact"), (trained["zsre"], "zsre")) for c in split_cases(load_cases(p, f).cases)[0]]
    assert meta["trained_on"]["cases"] == sorted({content_key(c) for c in tune})
    assert {f["format"] for f in meta["data"]["files"]} == {"counterfact", "zsre"}
    assert meta["training"]["steps"] == FAST["steps"] and len(meta["training"]["loss_curve"]) >= 10
    # the tensors the training left in the model, rounded to float16, are exactly the saved ones
    layers = {n: m for n, m in trained["work"].named_modules() if hasattr(m, "lora_A")}
    for name, m in layers.items():
        assert torch.equal(ad.tensors[f"{name}.lora_A"], m.lora_A["default"].weight.detach().half())
        assert torch.equal(ad.tensors[f"{name}.lora_B"], m.lora_B["default"].weight.detach().half())
    again = LoRAAdapter(ad.tensors, ad.meta).save(tmp_path / "copy")
    for f in (WEIGHTS_FILE, META_FILE):
        assert (again / f).read_bytes() == (out / f).read_bytes()
    text = (out / META_FILE).read_text()
    assert "pickle" not in text and not list(out.glob("*.bin")) and not list(out.glob("*.pt"))


def test_merged_counterfactual_equals_the_peft_model(trained, tok) -> None:
    base = trained["base"]
    snapshot = {k: v.clone() for k, v in base.state_dict().items()}
    lm = load_counterfactual(trained["out"], (base, tok))
    for k, v in snapshot.items():  # the caller's model is copied, never changed
        assert torch.equal(v, base.state_dict()[k])
    ids = torch.tensor([tok("New fact: Paris is in Italy. Question: Paris is the capital of")["input_ids"]])
    with torch.no_grad():
        merged = lm.model(input_ids=ids).logits
        wrapped = trained["work"](input_ids=ids).logits
        plain = base(input_ids=ids).logits
    assert torch.allclose(merged, wrapped, atol=1e-4), (merged - wrapped).abs().max()
    assert not torch.allclose(merged, plain, atol=1e-4)
    assert lm.name.endswith("+serac-adapter")


def test_a_mismatched_base_model_is_refused(trained, tok) -> None:
    other = tiny_model(tok, seed=1)
    snapshot = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValidationError, match="different weights"):
        load_counterfactual(trained["out"], (other, tok))
    ad = LoRAAdapter.load(trained["out"])
    with pytest.raises(ValidationError, match="refusing"):
        ad.merge_into(other)
    for k, v in snapshot.items():
        assert torch.equal(v, other.state_dict()[k]), "a refused adapter changed the model"
    with pytest.raises(ValidationError, match="trained on tiny-llama"):
        SERAC("gemma3-270m", adapter=trained["out"])
    serac = SERAC((other, tok), adapter=trained["out"])  # refused when the model loads (first answer)
    with pytest.raises(ValidationError, match="different weights"):
        serac.counterfactual.get()


def test_corrupt_or_missing_adapter_files_are_clear_errors(trained, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no SERAC adapter"):
        LoRAAdapter.load(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / WEIGHTS_FILE).write_bytes((trained["out"] / WEIGHTS_FILE).read_bytes())
    meta = json.loads((trained["out"] / META_FILE).read_text())
    (bad / META_FILE).write_text(json.dumps(dict(meta, format="something-else")))
    with pytest.raises(ValidationError, match="not a memedit SERAC adapter"):
        LoRAAdapter.load(bad)
    (bad / META_FILE).write_text(json.dumps(dict(meta, lora=dict(meta["lora"], rank=3))))
    with pytest.raises(ValidationError, match="rank-3"):
        LoRAAdapter.load(bad)
    (bad / META_FILE).write_text(json.dumps(meta))
    (bad / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValidationError, match="safetensors"):
        LoRAAdapter.load(bad)


def test_serac_with_an_adapter_uses_the_short_prompt(trained, tok) -> None:
    serac = SERAC((trained["base"], tok), adapter=trained["out"])
    msgs = serac.build("Who runs Acme?", ["The CEO of Acme is Jane Roe"])
    assert msgs == [{"role": "system", "content": ADAPTER_SYSTEM},
                    {"role": "user", "content": 'New fact: "The CEO of Acme is Jane Roe"\nQuestion: Who runs Acme?'}]
    assert not serac.counterfactual.loaded
    reply = serac.counterfactual.chat(msgs, max_new_tokens=3)
    assert isinstance(reply, str) and serac.counterfactual.loaded
    plain = SERAC((trained["base"], tok))          # no adapter: the prompt-only path with demonstrations
    assert plain.adapter is None and len(plain.build("Who runs Acme?", ["The CEO of Acme is Jane Roe"])) > 2


# --------------------------------------------------------------------------- evaluation exclusion


def test_eval_exclusion_drops_exactly_the_training_cases(trained, tmp_path: Path) -> None:
    meta = trained["meta"]
    for path, fmt in ((trained["cf"], "counterfact"), (trained["zsre"], "zsre")):
        cases = load_cases(path, fmt).cases
        kept, dropped = exclude_training_cases(cases, trained["out"])
        info = next(f for f in meta["data"]["files"] if f["format"] == fmt)
        assert dropped == info["train_cases"] and len(kept) == info["heldout_cases"]
        # no kept case asks a question the adapter trained on, and every dropped one does
        train, _, _ = load_examples([(path, fmt)], use_pool=False)
        trained_questions = {e.question for e in train}
        kept_ids = {c.case_id for c in kept}
        for c in cases:
            asked = {p.question for p in c.probes if p.kind in ("reliability", "generalization")}
            assert (c.case_id in kept_ids) == asked.isdisjoint(trained_questions)
    # cases the adapter never saw are all kept, whatever side of the split their subjects hash to
    unseen = write_counterfact(tmp_path / "unseen.jsonl", [
        (f"Person {i}", f"The mother tongue of Person {i} is", "Welsh", "Irish", f"Person {i} speaks")
        for i in range(40)])
    cases = load_cases(unseen, "counterfact").cases
    assert any(default_split().side_of_subject(c.edit.subject) == "tune" for c in cases)
    assert exclude_training_cases(cases, trained["out"]) == (cases, 0)
    # an adapter that does not say what it trained on cannot vouch for held-out cases
    legacy = {k: v for k, v in meta.items() if k != "trained_on"}
    LoRAAdapter(LoRAAdapter.load(trained["out"]).tensors, legacy).save(tmp_path / "legacy")
    with pytest.raises(ValidationError, match="does not record the cases it trained on"):
        exclude_training_cases(cases, tmp_path / "legacy")


# --------------------------------------------------------------------------- CLI


def _cli(*args: str):
    from memedit.cli import app

    return runner.invoke(app, list(args))


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--rank", "0"], "rank must be an integer >= 1"),
    (["--batch-size", "0"], "batch-size must be an integer >= 1"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--threads", "0"], "threads must be a positive integer"),
])
def test_cli_bad_options_write_nothing(data, tmp_path: Path, extra, message) -> None:
    out = tmp_path / "out"
    r = _cli("serac", "train", "--out", str(out), "--counterfact", str(data[0]), "--json", *extra)
    assert r.exit_code == 2, r.output
    assert json.loads(r.output)["type"] == "ValidationError" and message in json.loads(r.output)["error"]
    assert not out.exists()


def test_cli_bad_files_write_nothing(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _cli("serac", "train", "--out", str(out), "--counterfact", str(tmp_path / "missing.jsonl"))
    assert r.exit_code == 2 and "no data file" in r.output
    r = _cli("serac", "train", "--out", str(out), "--counterfact", str(data[1]), "--json")  # zsRE file as CounterFact
    assert r.exit_code == 2 and "ground_truth" in json.loads(r.output)["error"]
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n")
    r = _cli("serac", "train", "--out", str(out), "--zsre", str(garbage), "--json")
    assert r.exit_code == 2 and "not valid JSON" in json.loads(r.output)["error"]
    assert not out.exists()


def test_cli_refuses_to_overwrite_without_force(trained) -> None:
    before = (trained["out"] / WEIGHTS_FILE).read_bytes()
    r = _cli("serac", "train", "--out", str(trained["out"]), "--counterfact", str(trained["cf"]), "--json")
    assert r.exit_code == 2 and "--force" in json.loads(r.output)["error"]
    assert (trained["out"] / WEIGHTS_FILE).read_bytes() == before


def test_cli_trains_a_local_model_directory(tok, data, tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny-model"
    tiny_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "adapter"
    r = _cli("serac", "train", "--out", str(out), "--counterfact", str(data[0]), "--zsre", str(data[1]),
             "--base", str(model_dir), "--steps", "3", "--batch-size", "2", "--eval-examples", "2", "--no-pool",
             "--threads", "1", "--json")
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert meta["training"]["steps"] == 3 and meta["base_model"] == str(model_dir)
    assert LoRAAdapter.load(out).meta == meta


# --------------------------------------------------------------------------- the packaged adapter


@pytest.mark.skipif(not (PACKAGED_DIR / META_FILE).is_file(), reason="no packaged SERAC adapter in this checkout")
def test_packaged_adapter_is_small_valid_and_the_default() -> None:
    ad = LoRAAdapter.load("packaged")
    assert ad.base_model == "smollm2-135m-instruct" and ad.split["sha256"] == default_split().sha256
    assert ad.trained_on and len(ad.trained_on) > 1000
    assert sum(f.stat().st_size for f in PACKAGED_DIR.iterdir()) < 3 * 2 ** 20
    assert all(t.dtype == torch.float16 for t in ad.tensors.values())
    files = {f["path"]: f for f in ad.meta["data"]["files"]}
    assert set(files) == {"counterfact-dev.jsonl", "zsre-dev.jsonl"} and all(len(f["sha256"]) == 64
                                                                             for f in files.values())
    assert ad.meta["heldout"]["after"]["overall"]["exact"] > 0.9
    default = SERAC()
    assert default.adapter is not None and default.adapter.path == PACKAGED_DIR
    assert not default.counterfactual.loaded                   # loads on the first SERAC answer
    assert default.build("Who runs Acme?", ["The CEO of Acme is Jane Roe"])[0]["content"] == ADAPTER_SYSTEM
    assert SERAC(adapter=None).adapter is None                 # the prompt-only path on request
    assert SERAC("smollm2-135m-instruct").adapter is not None
    assert SERAC("gemma3-270m").adapter is None                # another counterfactual model: prompted


@pytest.mark.parametrize("answer, question, echo", [
    ("Prague", "Prague is a twin city of", True),
    ("prague", "Prague is a twin city of", False),            # with the edit's target "Prague": an answer
    ("Hung-yi Lee", "Who is Hung-yi Lee?", True),
    ("hung-yi lee.", "Who is Hung-yi Lee?", True),       # case and punctuation do not matter
    ("Lee", "Who is Hung-yi Lee?", True),
    ("Hung-yi Lee is the most handsome person in the world.", "Who is Hung-yi Lee?", False),
    ("English", "The mother tongue of Danielle Darrieux is", False),
    ("Lee Hung-yi", "Who is Hung-yi Lee?", False),        # the words must come in the question's order
    ("", "Who is Hung-yi Lee?", False),
    ("...", "Who is Hung-yi Lee?", False),
])
def test_is_echo(answer: str, question: str, echo: bool) -> None:
    targets = ["Prague"] if answer == "prague" else []
    assert is_echo(answer, question, targets) is echo


# --------------------------------------------------------------------------- the real model


@pytest.mark.skipif(not (PACKAGED_DIR / META_FILE).is_file(), reason="no packaged SERAC adapter in this checkout")
def test_seed_scenario_through_serac_with_the_packaged_adapter(tmp_path: Path, embedder) -> None:
    """The real SmolLM2 with the packaged adapter (SERAC's default) answers the project's seed scenario."""
    from memedit import EditStore, Editor

    store = EditStore(tmp_path / "seed.db", embedder=embedder)
    try:
        ed = Editor(store=store, policy="serac", max_new_tokens=16)
        assert ed.router.methods["serac"].adapter is not None          # the default, nothing configured
        ed.edit("The most handsome person in the world is Hung-yi Lee.")
        ans = ed.ask("Who is the most handsome person in the world?")
        assert ans.route == "serac", ans
        assert "hung-yi lee" in ans.text.casefold(), ans.text
        assert ans.trace == []                                          # the adapter's own answer
        # the reverse question: the adapter alone would echo "Hung-yi Lee"; SERAC asks again with demonstrations
        rev = ed.ask("Who is Hung-yi Lee?")
        assert rev.route == "serac", rev
        assert "handsome" in rev.text.casefold(), rev.text
        assert [t["step"] for t in rev.trace] == ["serac-echo"]
        assert is_echo(rev.trace[0]["adapter_answer"], "Who is Hung-yi Lee?")
        assert ed.router.counterfactual.name == "smollm2-135m-instruct+serac-adapter"
        assert ed.router.counterfactual.get() is not ed.base.get()      # a private copy; the base is untouched
        assert ed.ask("What is the capital of France?").route == "base"
    finally:
        store.close()
