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
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
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
