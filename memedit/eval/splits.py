"""One tune / report split of every evaluation file, grouped by subject.

>>> from memedit.eval.splits import default_split
>>> split = default_split()              # the split of ../shared/data (read once per process)
>>> split.side_of_subject("Danielle Darrieux") in ("tune", "report")
True
>>> split.side_of_subject("danielle  darrieux") == split.side_of_subject("Danielle Darrieux")
True

Everything memedit trains, tunes or chooses (the scope classifier, SERAC's
adapter, thresholds, hyperparameters, demonstration pools, catalogues) may
look only at the **tune** side; every figure we report is measured on the
**report** side. The rule is the same for every file, so one subject is on
one side in CounterFact, zsRE, the scope questions and MQuAKE alike:

* a subject's side is ``sha256(f"{name}\\x1f{normalised subject}")``: its first
  16 hex digits as a fraction of 2**64; under ``report_fraction`` (0.3) is
  *report*, the rest *tune*. Normalising casefolds, keeps letters and digits
  and drops a leading "the", so "the US" and "US" go together.
* an MQuAKE case is grouped with every subject in its chain (the edited
  subjects, and each hop's subject), joined across cases into connected groups
  (union-find); a group's side is the hash of its sorted member keys. Hub
  entities that are subjects of more than ``hub_cases`` cases' chains and are
  edited in none (the United States, the Catholic Church) do not join groups:
  joining through them makes one group of 115 of 200 cases, and they only carry
  unedited background facts. Every member subject of an MQuAKE group takes the
  group's side in every other file too (:meth:`DataSplit.side_of_subject`).

The split is fixed by its definition (:meth:`DataSplit.definition`, hashed by
:attr:`DataSplit.sha256`); artifacts trained on the tune side record both.
Data that is not in ``../shared/data`` (a user's own file) is split by the
same per-subject rule.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence, TypeVar

from ..errors import ValidationError

log = logging.getLogger(__name__)

Side = Literal["tune", "report"]
SIDES: tuple[str, ...] = ("tune", "report")
#: what ``--side`` accepts: one side, or both
SIDE_CHOICES: tuple[str, ...] = ("tune", "report", "all")
MQUAKE_FILE = "mquake/mquake-cf-dev.jsonl"

T = TypeVar("T")


def normalise_key(text: str) -> str:
    """Casefolded letters and digits joined by single spaces, without a leading "the"."""
    words = re.findall(r"[^\W_]+", str(text).casefold())
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(words)


@dataclass(frozen=True)
class SplitRule:
    """The hash rule: which side one normalised key falls on."""

    name: str = "memedit-split-v1"
    report_fraction: float = 0.3
    hub_cases: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < float(self.report_fraction) < 1.0:
            raise ValidationError(f"report_fraction must be in (0, 1), got {self.report_fraction!r}")
        if int(self.hub_cases) < 1:
            raise ValidationError(f"hub_cases must be at least 1, got {self.hub_cases!r}")

    def fraction_of(self, key: str) -> float:
        digest = hashlib.sha256(f"{self.name}\x1f{key}".encode("utf-8")).hexdigest()
        return int(digest[:16], 16) / 2**64

    def side_of_key(self, key: str) -> Side:
        """The side of an already normalised key (a subject, a group name, a message group)."""
        return "report" if self.fraction_of(key) < self.report_fraction else "tune"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "report_fraction": self.report_fraction, "hub_cases": self.hub_cases,
            "rule": "report iff int(sha256(f'{name}\\x1f{key}')[:16], 16) / 2**64 < report_fraction; key = "
                    "casefolded letters/digits of the subject without a leading 'the'; MQuAKE cases grouped "
                    "with their chains' subjects (hubs of more than hub_cases unedited chains excepted), a "
                    "group's key its sorted member keys joined by '|', its members on its side in every file",
        }


DEFAULT_RULE = SplitRule()


def side_of_key(key: str, rule: SplitRule = DEFAULT_RULE) -> Side:
    """The side of any string key under the default rule (normalised first).

    For data of our own (a labelled message set, say), group related items under
    one key and split by it:

    >>> side_of_key("greeting-17") in ("tune", "report")
    True
    """
    return rule.side_of_key(normalise_key(key))


# --------------------------------------------------------------------------- MQuAKE groups


def _mquake_subjects(rec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(edited subjects, every chain subject) of one MQuAKE record, normalised."""
    edited = [normalise_key(rw.get("subject", "")) for rw in rec.get("requested_rewrite") or []]
    orig = rec.get("orig") or {}
    chain = [normalise_key(t[0]) for key in ("triples_labeled", "new_triples_labeled")
             for t in orig.get(key) or [] if t]
    return [s for s in edited if s], [s for s in chain if s]


def mquake_groups(records: Sequence[Mapping[str, Any]], hub_cases: int) -> tuple[list[str], dict[str, str]]:
    """Each record's group key, and every grouped subject's group key.

    Records are joined when they share an edited subject or a chain subject
    that is not a hub (see the module docstring).
    """
    edited_anywhere: set[str] = set()
    chain_count: Counter[str] = Counter()
    per_record = []
    for rec in records:
        edited, chain = _mquake_subjects(rec)
        edited_anywhere.update(edited)
        chain_count.update(set(chain))
        per_record.append((edited, chain))
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    nodes = []
    for i, (edited, chain) in enumerate(per_record):
        me = f"\x00case{i}"
        find(me)
        members = edited + [s for s in chain if s in edited_anywhere or chain_count[s] <= hub_cases]
        for s in members:
            parent[find(s)] = find(me)
        nodes.append(members)
    comps: dict[str, set[str]] = {}
    for members in nodes:
        for s in members:
            comps.setdefault(find(s), set()).add(s)
    root_key = {root: "|".join(sorted(ms)) for root, ms in comps.items()}
    record_keys = []
    for i, members in enumerate(nodes):
        root = find(f"\x00case{i}")
        record_keys.append(root_key.get(root, f"mquake-case-without-subjects-{i}"))
    subject_keys = {s: root_key[find(s)] for members in nodes for s in members}
    return record_keys, subject_keys


def read_jsonl_records(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"cannot read {p} for the split: {exc}") from exc


# --------------------------------------------------------------------------- the split of a data folder


@dataclass
class DataSplit:
    """The split of one data folder: the hash rule plus the MQuAKE groups' sides.

    >>> split = DataSplit(DEFAULT_RULE)            # no MQuAKE file: the plain per-subject rule
    >>> split.side_of_subject("Ellie Kemper") in ("tune", "report")
    True
    """

    rule: SplitRule = DEFAULT_RULE
    #: normalised subject -> side, for subjects in an MQuAKE group
    overrides: dict[str, Side] = field(default_factory=dict)
    mquake_sha256: str | None = None

    @classmethod
    def from_mquake_records(cls, records: Sequence[Mapping[str, Any]], rule: SplitRule = DEFAULT_RULE,
                            sha256: str | None = None) -> "DataSplit":
        _, subject_keys = mquake_groups(records, rule.hub_cases)
        overrides: dict[str, Side] = {s: rule.side_of_key(g) for s, g in subject_keys.items()}
        return cls(rule, overrides, sha256)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path | None = None, rule: SplitRule = DEFAULT_RULE) -> "DataSplit":
        """The split of ``data_dir`` (default: ``$MEMEDIT_DATA_DIR`` or ``../shared/data``)."""
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        path = root / MQUAKE_FILE
        if not path.is_file():
            log.info("no MQuAKE file at %s: the split is the plain per-subject rule", path)
            return cls(rule)
        raw = path.read_bytes()
        return cls.from_mquake_records(read_jsonl_records(path), rule, hashlib.sha256(raw).hexdigest())

    # -- sides
    def side_of_subject(self, subject: str) -> Side:
        key = normalise_key(subject)
        return self.overrides.get(key) or self.rule.side_of_key(key)

    def side_of_subjects(self, subjects: Iterable[str]) -> Side | None:
        """The side of an item about several subjects; None if they disagree (it straddles the split)."""
        sides = {self.side_of_subject(s) for s in subjects if normalise_key(s)}
        return next(iter(sides)) if len(sides) == 1 else None

    def mquake_sides(self, records: Sequence[Mapping[str, Any]]) -> list[Side]:
        """The side of each MQuAKE record, grouping the given records with each other.

        A group that contains a subject already on a side through this split's
        own MQuAKE groups takes that side (so the shared file's split is
        reproduced exactly, and a user's file agrees with it where it overlaps).
        """
        record_keys, subject_keys = mquake_groups(records, self.rule.hub_cases)
        group_side: dict[str, Side] = {}
        for s, g in subject_keys.items():
            if s in self.overrides and g not in group_side:
                group_side[g] = self.overrides[s]
        return [group_side.get(g) or self.rule.side_of_key(g) for g in record_keys]

    def select(self, items: Sequence[T], sides: Sequence[str], side: str) -> list[T]:
        """The items on ``side`` ("tune", "report" or "all"), in their order."""
        check_side(side)
        if side == "all":
            return list(items)
        return [it for it, s in zip(items, sides) if s == side]

    # -- identity
    def definition(self) -> dict[str, Any]:
        overrides = json.dumps(sorted(self.overrides.items()), ensure_ascii=False)
        return {"rule": self.rule.to_dict(), "mquake_file_sha256": self.mquake_sha256,
                "mquake_subjects": len(self.overrides),
                "overrides_sha256": hashlib.sha256(overrides.encode("utf-8")).hexdigest()}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.definition(), sort_keys=True).encode("utf-8")).hexdigest()

    def record(self) -> dict[str, Any]:
        """What an artifact or a report stores about the split it used."""
        return {"definition": self.definition(), "sha256": self.sha256}


def check_side(side: str) -> str:
    if side not in SIDE_CHOICES:
        raise ValidationError(f"side must be one of {SIDE_CHOICES}, got {side!r}")
    return side


def default_data_dir() -> Path:
    """``$MEMEDIT_DATA_DIR``, else ``shared/data`` beside the project's folder (``../shared/data`` from its root)."""
    env = os.environ.get("MEMEDIT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


_DEFAULT: DataSplit | None = None


def default_split() -> DataSplit:
    """The split of the default data folder, computed once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = DataSplit.for_data_dir()
    return _DEFAULT
