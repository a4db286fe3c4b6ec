"""A catalogue of Wikidata relations, matched to question phrases and edit prompts by embedding similarity.

>>> from memedit.methods.relations import Catalogue
>>> cat = Catalogue.load()
>>> cat["P36"].question_for("France")
"Which city is France's capital?"
>>> cat["P27"].clozes[:2]
('{} is a national of', '{} holds citizenship of')
>>> cat.relation_of_template("{} holds a passport from")[0].id      # doctest: +SKIP
'P27'

The catalogue (``memedit/resources/relations.json``, version 2) was written
by hand from each Wikidata property's label and meaning, in our own English.
Each relation has an id (``P27``), a label, a one-line description, the kind
of object it points to (``country``), relation phrases (``"citizenship"``,
``"national of"``), several question forms and several statement (cloze)
forms with ``{}`` for the subject (the first of each is the main form), and
three well-known real facts used as few-shot examples for single-hop answers.
Which of a relation's own cloze forms is the main one was chosen by how well
SmolLM2-135M completes it on the tune side of the project's MQuAKE split
(``benchmarks/relation_coverage.py --cloze-forms``); no wording came from there.

MQuAKE's template files (``question-templates.json``, ``cloze-templates.json``)
were used to choose which relations to cover and are used afterwards only to
check the catalogue: ``tests/test_relations_catalogue.py`` fails when a
phrasing equals or nearly copies one of them (or a few-shot example is one of
``rel-prompts.json``'s), and ``benchmarks/relation_coverage.py`` measures how
many of their templates the matcher reads as the right relation. The first
version of this file did copy most of MQuAKE's templates; version 2 replaced
every phrasing and example.

Matching uses the packaged MiniLM sentence embedder: a text's score for a
relation is its best cosine similarity with the relation's label and phrases;
an edit prompt is also compared with every question and cloze form.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from ..embeddings import Embedder

log = logging.getLogger(__name__)

CATALOGUE_PATH = Path(__file__).resolve().parent.parent / "resources" / "relations.json"
#: what replaces ``{}`` when a template is embedded without a subject
PLACEHOLDER = "X"


@dataclass(frozen=True)
class Relation:
    """One Wikidata relation with the ways English says it.

    ``questions`` and ``clozes`` hold every question form and every statement
    (cloze) form, each with one ``{}`` for the subject; a cloze ends where the
    object would follow ("{} is a national of"). The first of each is the
    relation's main form (:attr:`question`, :attr:`cloze`): the sub-question
    put to the store and the model, and the cloze the model completes after
    the few-shot ``examples``. All forms are matched against edit prompts.
    """

    id: str
    label: str
    type: str
    phrases: tuple[str, ...]
    questions: tuple[str, ...]
    clozes: tuple[str, ...]
    examples: tuple[tuple[str, str], ...]
    #: its words also occur inside other relations' phrasings ("located", "country"): needs a closer match
    generic: bool = False
    #: what the relation means, in the catalogue's own words (documentation; not matched)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.questions or not self.clozes:
            raise ValueError(f"relation {self.id}: needs at least one question form and one cloze form")

    @property
    def question(self) -> str:
        """The main question form."""
        return self.questions[0]

    @property
    def cloze(self) -> str:
        """The main cloze form (the one the model completes)."""
        return self.clozes[0]

    def question_for(self, subject: str) -> str:
        return self.question.format(subject)

    def cloze_for(self, subject: str) -> str:
        return self.cloze.format(subject)


class Catalogue:
    """The relations and their phrase embeddings (computed once, on first match)."""

    _shared: "Catalogue | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, relations: Sequence[Relation], embedder: "Embedder | str | None" = None):
        if not relations:
            raise ValidationError("a relation catalogue needs at least one relation")
        ids = [r.id for r in relations]
        if len(set(ids)) != len(ids):
            raise ValidationError("relation ids in a catalogue must be unique")
        self.relations = list(relations)
        self._by_id = {r.id: r for r in self.relations}
        self._embedder = embedder
        self._phrase_vecs: np.ndarray | None = None
        self._phrase_rel: np.ndarray | None = None
        self._form_vecs: np.ndarray | None = None
        self._form_rel: np.ndarray | None = None
        self._template_cache: dict[str, tuple[Relation, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None, embedder: "Embedder | str | None" = None) -> "Catalogue":
        """The packaged catalogue (one per process) or the one at ``path``."""
        if path is None and embedder is None:
            with cls._shared_lock:
                if cls._shared is None:
                    cls._shared = cls(_read(CATALOGUE_PATH))
                return cls._shared
        return cls(_read(Path(path or CATALOGUE_PATH)), embedder)

    def __len__(self) -> int:
        return len(self.relations)

    def __getitem__(self, rel_id: str) -> Relation:
        try:
            return self._by_id[rel_id]
        except KeyError:
            raise ValidationError(f"no relation {rel_id!r} in the catalogue") from None

    def __contains__(self, rel_id: object) -> bool:
        return rel_id in self._by_id

    @property
    def embedder(self) -> "Embedder":
        from ..embeddings import Embedder

        if self._embedder is None or isinstance(self._embedder, str):
            self._embedder = Embedder.shared(*(() if self._embedder is None else (self._embedder,)))
        return self._embedder

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._phrase_vecs is None:
            with self._lock:
                if self._phrase_vecs is None:
                    texts, owner = [], []
                    for i, r in enumerate(self.relations):
                        for p in (r.label, *r.phrases):
                            texts.append(p)
                            owner.append(i)
                    self._phrase_rel = np.asarray(owner, dtype=np.int64)
                    self._phrase_vecs = self._encode_cached(texts)
        return self._phrase_vecs, self._phrase_rel  # type: ignore[return-value]

    def _encode_cached(self, texts: list[str]) -> np.ndarray:
        """The embedder's vectors of ``texts``, kept under the cache directory between processes.

        Embedding the catalogue's ~740 phrasings took seconds in every process that read one fact (each
        ``memedit add``); the file is keyed by the texts and the embedder's name, so any change re-embeds.
        """
        from ..config import cache_dir

        name = getattr(self.embedder, "name", None)
        if not name:
            return self.embedder.encode(texts)
        key = hashlib.sha256(json.dumps([str(name), texts], ensure_ascii=False).encode("utf-8")).hexdigest()[:32]
        path = cache_dir() / "catalogue-vectors" / f"{key}.safetensors"
        if path.is_file():
            try:
                vecs = load_file(str(path))["vectors"]
                if vecs.shape[0] == len(texts):
                    return vecs
            except Exception as exc:  # noqa: BLE001 - a damaged cache file is only a cache miss
                log.warning("ignoring the unreadable catalogue vector cache %s: %s", path, exc)
        vecs = np.ascontiguousarray(self.embedder.encode(texts), dtype=np.float32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            save_file({"vectors": vecs}, str(tmp))
            os.replace(tmp, path)  # readers never see a half-written file
        except OSError as exc:  # a read-only cache directory costs time, never an answer
            log.warning("could not cache catalogue vectors at %s: %s", path, exc)
        return vecs

    def scores(self, vecs: np.ndarray) -> np.ndarray:
        """``(n_texts, n_relations)``: each text's best phrase similarity per relation."""
        pv, owner = self._vectors()
        sims = np.asarray(vecs, np.float32) @ pv.T                      # (n, n_phrases)
        out = np.full((sims.shape[0], len(self.relations)), -1.0, dtype=np.float32)
        for j in range(len(self.relations)):
            cols = owner == j
            out[:, j] = sims[:, cols].max(axis=1)
        return out

    def match(self, texts: Sequence[str]) -> list[tuple[Relation, float]]:
        """For each text, the best-matching relation and its similarity."""
        if not texts:
            return []
        s = self.scores(self.embedder.encode(list(texts)))
        best = s.argmax(axis=1)
        return [(self.relations[int(j)], float(s[i, j])) for i, j in enumerate(best)]

    def relation_of_template(self, template: str) -> tuple[Relation, float]:
        """The relation a fact edit's prompt template (``"{} holds a passport from"``) expresses, and how sure.

        The template with a placeholder subject is compared with every
        relation's phrases, cloze form and question form; cached per template.
        """
        key = template.strip()
        hit = self._template_cache.get(key)
        if hit is not None:
            return hit
        filled = key.replace("{}", PLACEHOLDER)
        vec = self.embedder.encode([filled])
        s = self.scores(vec)[0]
        forms, owner = self._form_vectors()
        sims = forms @ vec[0]
        for j in range(len(self.relations)):
            s[j] = max(s[j], float(sims[owner == j].max()))
        j = int(s.argmax())
        out = (self.relations[j], float(s[j]))
        with self._lock:
            if len(self._template_cache) > 10_000:
                self._template_cache.clear()
            self._template_cache[key] = out
        return out

    def _form_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every relation's question and cloze forms (subject ``X``), and each one's relation index."""
        if self._form_vecs is None:
            with self._lock:
                if self._form_vecs is None:
                    texts, owner = [], []
                    for i, r in enumerate(self.relations):
                        for form in (*r.clozes, *r.questions):
                            texts.append(form.format(PLACEHOLDER))
                            owner.append(i)
                    self._form_rel = np.asarray(owner, dtype=np.int64)
                    self._form_vecs = self._encode_cached(texts)
        return self._form_vecs, self._form_rel  # type: ignore[return-value]


def _forms(row: dict, plural: str, singular: str) -> tuple[str, ...]:
    """A row's forms: the list under ``plural``, or (the first catalogue version) one string under ``singular``."""
    forms = row[plural] if plural in row else [row[singular]]
    if isinstance(forms, str) or not forms:
        raise ValueError(f"relation {row['id']}: {plural} must be a non-empty list of strings")
    for form in forms:
        if not isinstance(form, str) or form.count("{}") != 1:
            raise ValueError(f"relation {row['id']}: {singular} form {form!r} needs exactly one {{}}")
    return tuple(forms)


def _read(path: Path) -> list[Relation]:
    """The relations of a catalogue file (``questions``/``clozes`` lists, or single ``question``/``cloze``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        out = []
        for row in doc["relations"]:
            out.append(Relation(id=row["id"], label=row["label"], type=row["type"], phrases=tuple(row["phrases"]),
                                questions=_forms(row, "questions", "question"), clozes=_forms(row, "clozes", "cloze"),
                                examples=tuple((s, o) for s, o in row["examples"]),
                                generic=bool(row.get("generic", False)), description=str(row.get("description", ""))))
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"{path} is not a valid relation catalogue: {exc}") from exc
