"""How well the hand-written relation catalogue reads MQuAKE's relation templates (which it never saw).

    python benchmarks/relation_coverage.py [--data ../shared/data/mquake] [--json out.json] [--verbose]

For each relation id in MQuAKE's ``cloze-templates.json`` and
``question-templates.json`` (44 relations), three readings are scored:

* **cloze as an edit prompt**: the cloze template, ``[X]`` -> ``{}`` and the
  object blank dropped ("{} is a citizen of"), through
  :meth:`Catalogue.relation_of_template` (what decides whether a stored MQuAKE
  edit answers a hop);
* **question as an edit prompt**: the question template, the same way;
* **question decomposed**: the question template with a made-up name for
  ``[X]`` through :class:`Decomposer` (what reads a question's relation
  chain); right when the chain is exactly ``[relation id]``.

The catalogue's phrasings are written from the Wikidata properties'
meanings, not from these files (``tests/test_relations_catalogue.py`` checks
that none is a copy), so the figures measure how the phrasings generalise.
P131 and P276 have the same templates word for word, and P1308's
("The [X] is __") says nothing about the relation: 44 of 44 is not reachable.
Prints one line per relation and the totals; exits 1 when the data is absent.

    python benchmarks/relation_coverage.py --cloze-forms 12 [--model smollm2-135m-instruct]

``--cloze-forms N`` measures instead which of each relation's own cloze forms
the model completes best: up to N single-hop facts per relation from the
**tune** side of the project's MQuAKE split (``memedit.eval.splits``; the
report side is never read), each form after the relation's few-shot
examples, greedy, scored with the MQuAKE evaluator's matcher. The catalogue's
main cloze is the best form when it beats the first-written one by 2 or more.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memedit.methods.multihop import Decomposer  # noqa: E402
from memedit.methods.relations import Catalogue  # noqa: E402

log = logging.getLogger("relation_coverage")

#: stands for [X] in a decomposed question: an invented, capitalised name (found as the head entity)
ENTITY = "Quorvak Lindemere"


def as_edit_template(template: str) -> str:
    """A benchmark template as an edit prompt: ``[X]`` -> ``{}``, a trailing object blank ``__`` dropped."""
    return re.sub(r"\s*_{2,}\s*$", "", template.replace("[X]", "{}")).strip()


def coverage(folder: Path, catalogue: Catalogue | None = None) -> dict[str, object]:
    """Per-relation readings and totals (see the module docstring)."""
    cloze = json.loads((folder / "cloze-templates.json").read_text(encoding="utf-8"))
    question = json.loads((folder / "question-templates.json").read_text(encoding="utf-8"))
    cat = catalogue or Catalogue.load()
    dec = Decomposer(cat)
    rows = []
    for rid in dict.fromkeys([*cloze, *question]):
        row: dict[str, object] = {"relation": rid, "in_catalogue": rid in cat}
        if rid in cloze:
            got, score = cat.relation_of_template(as_edit_template(cloze[rid]))
            row.update(cloze=cloze[rid], cloze_read=got.id, cloze_score=round(score, 3))
        if rid in question:
            got, score = cat.relation_of_template(as_edit_template(question[rid]))
            row.update(question=question[rid], question_read=got.id, question_score=round(score, 3))
            d = dec.decompose(question[rid].replace("[X]", ENTITY), [ENTITY])
            row["question_chain"] = [m.relation.id for m in d.relations]
        rows.append(row)

    def right(key: str) -> int:
        return sum(1 for r in rows if r.get(key) == r["relation"])

    return {"relations": len(rows), "in_catalogue": sum(1 for r in rows if r["in_catalogue"]),
            "cloze_right": right("cloze_read"), "cloze_total": sum(1 for r in rows if "cloze" in r),
            "question_right": right("question_read"), "question_total": sum(1 for r in rows if "question" in r),
            "decomposed_right": sum(1 for r in rows if r.get("question_chain") == [r["relation"]]),
            "rows": rows}


def cloze_form_accuracy(data_file: Path, per_relation: int, model: str, seed: int = 0,
                        catalogue: Catalogue | None = None) -> dict[str, list[dict[str, object]]]:
    """Per relation, each cloze form's single-hop accuracy on tune-side MQuAKE facts (see the module docstring)."""
    from memedit.eval.mquake import hit, load_mquake
    from memedit.eval.splits import DataSplit, read_jsonl_records
    from memedit.methods.multihop import clean_answer, complete_lines, fold
    from memedit.models.backends import as_backend

    cases = load_mquake(data_file)
    sides = DataSplit.for_data_dir(data_file.parent.parent).mquake_sides(read_jsonl_records(data_file))
    facts: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = defaultdict(dict)
    for case, side in zip(cases, sides):
        if side != "tune":  # choosing a form is tuning: the report side stays unseen
            continue
        for h in (*case.single_hops, *case.new_single_hops):
            facts[h.relation].setdefault(fold(h.subject), (h.subject, h.answers))
    cat = catalogue or Catalogue.load()
    rng = random.Random(seed)
    jobs = []  # (relation id, form, prompt, accepted answers)
    for rid in sorted(facts):
        if rid not in cat:
            continue
        items = sorted(facts[rid].values())
        rel = cat[rid]
        for subject, answers in rng.sample(items, min(per_relation, len(items))):
            for form in rel.clozes:
                shots = [f"{form.format(s)} {o}." for s, o in rel.examples[:3] if fold(s) != fold(subject)]
                jobs.append((rid, form, "\n".join([*shots, form.format(subject)]), answers))
    backend = as_backend(model)
    outs: list[str] = []
    for i in range(0, len(jobs), 16):
        outs += complete_lines(backend, [j[2] for j in jobs[i:i + 16]], 12)
    tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for (rid, form, _, answers), out in zip(jobs, outs):
        t = tally[rid][form]
        t[0] += hit(clean_answer(out), answers)
        t[1] += 1
    return {rid: [{"form": f, "right": tally[rid][f][0], "facts": tally[rid][f][1]} for f in cat[rid].clozes]
            for rid in tally}


def default_folder() -> Path:
    """``$MEMEDIT_DATA_DIR/mquake``, else ``../shared/data/mquake`` from the project's root."""
    env = os.environ.get("MEMEDIT_DATA_DIR")
    return (Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared" / "data") / "mquake"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_folder(),
                    help="folder with MQuAKE's cloze-templates.json and question-templates.json")
    ap.add_argument("--json", type=Path, help="write the figures and every reading here")
    ap.add_argument("--verbose", action="store_true", help="one line per relation, not only the misses")
    ap.add_argument("--cloze-forms", type=int, default=0, metavar="N",
                    help="instead: each cloze form's single-hop accuracy on up to N tune-side facts per relation")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="the model for --cloze-forms")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --cloze-forms")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.cloze_forms:
        import torch

        torch.set_num_threads(args.threads)
        data_file = args.data / "mquake-cf-dev.jsonl"
        if not data_file.is_file():
            print(f"no {data_file}", file=sys.stderr)
            return 1
        forms = cloze_form_accuracy(data_file, args.cloze_forms, args.model)
        for rid, rows in forms.items():
            best = max(rows, key=lambda r: r["right"])
            better = best is not rows[0] and best["right"] >= rows[0]["right"] + 2  # type: ignore[operator]
            print(f"{rid:>6}  " + " | ".join(f"{r['right']}/{r['facts']} {r['form']!r}" for r in rows)
                  + (f"  -> better: {best['form']!r}" if better else ""))
        if args.json:
            args.json.write_text(json.dumps(forms, indent=1, ensure_ascii=False), encoding="utf-8")
        return 0
    missing = [n for n in ("cloze-templates.json", "question-templates.json") if not (args.data / n).is_file()]
    if missing:
        print(f"no {', '.join(missing)} in {args.data}", file=sys.stderr)
        return 1
    out = coverage(args.data)
    for r in out["rows"]:  # type: ignore[union-attr]
        ok = (r.get("cloze_read") == r["relation"], r.get("question_read") == r["relation"],
              r.get("question_chain") == [r["relation"]])
        if args.verbose or not all(ok):
            marks = " ".join("ok  " if x else "MISS" for x in ok)
            print(f"{r['relation']:>6}  {marks}  cloze->{r.get('cloze_read')} ({r.get('cloze_score')})  "
                  f"question->{r.get('question_read')} ({r.get('question_score')})  "
                  f"decomposed->{r.get('question_chain')}  {r.get('question')!r}")
    print(f"relations in MQuAKE's templates: {out['relations']}; in the catalogue: {out['in_catalogue']}")
    print(f"cloze template read as the right relation:    {out['cloze_right']} of {out['cloze_total']}")
    print(f"question template read as the right relation: {out['question_right']} of {out['question_total']}")
    print(f"question decomposed to exactly that relation: {out['decomposed_right']} of {out['question_total']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
