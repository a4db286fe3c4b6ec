"""The ledger of weight commits: gated, persisted, ordered, reversible.

>>> from memedit.commit import CommitLedger
>>> ledger = CommitLedger(store, model, tok, model_name="smollm2-135m-instruct")   # doctest: +SKIP
>>> report = ledger.commit(edits, method="memit")    # weights change only if every gate passes   # doctest: +SKIP
>>> ledger.revert(report.commit_ids[0])              # base + the remaining ledger, bit-identical  # doctest: +SKIP

PEFT's merge / unmerge idea, made durable: each commit's low-rank factors are
serialised as safetensors (the memedit version and the base weights' hash in
its metadata) and kept by the store (:mod:`memedit.store.deltas`: a file
beside a SQLite store, ``x.db`` -> ``x.ledger/``; a row in a PostgreSQL
store, seen by every replica), with a row in the store's ``commits`` table. The model's state is always *base + the applied
commits replayed in order*: :meth:`CommitLedger.sync` restores the touched
matrices from an exact copy of the base values and re-adds the applied
deltas, so reverting or forgetting a commit gives weights bit-identical to a
model that never had it. Forgetting an edit (``EditStore.forget``) drops its
commits and erases their files even in a process with no model loaded; a
ledger attached to a live model catches up on its next :meth:`sync`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .edits import Edit, utcnow
from .errors import ConflictError, NotFoundError, StoreError, ValidationError
from .gates import GateConfig, GateResult, refusal_reason, run_gates
from .methods.deltas import EditResult, LowRankDelta, apply_deltas, restore, snapshot
from .methods.hooks import get_parameter
from .store import EditStore

log = logging.getLogger(__name__)
METHODS = ("rome", "memit", "emmet")


@dataclass
class CommitReport:
    """What a :meth:`CommitLedger.commit` call did: commits landed, and gates that refused others."""

    method: str
    commit_ids: list[int] = field(default_factory=list)
    committed_edits: list[int] = field(default_factory=list)
    #: {"edits": [...], "failed": [gate names], "reason": one line per failed gate, "gates": [...]}
    refused: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    candidates: list[int] = field(default_factory=list)   # the edits asked for (all of them, in order)

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, ok=self.ok)


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes in name order: identifies the base weights a ledger applies to."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(str(p.dtype).encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _run_method(method: str, model: Any, tok: Any, edits: Sequence[Edit], hparams: Any, stats: Any) -> EditResult:
    """The editors are imported on use: committing is rare, and they pull in more code."""
    if method == "rome":
        from .methods import rome
        from .methods.rome import RomeHParams

        # commits accumulate on the same weights: the sequential preset keeps perplexity from drifting
        hparams = hparams or RomeHParams.for_model(model, preset="sequential")
        return rome.apply(model, tok, edits[0], hparams, stats=stats)
    if method == "memit":
        from .methods import memit

        return memit.apply(model, tok, list(edits), hparams, stats=stats)
    if method == "emmet":
        from .methods import emmet

        return emmet.apply(model, tok, list(edits), hparams, stats=stats)
    raise ValidationError(f"unknown method {method!r}; use one of {METHODS}")


class CommitLedger:
    """Binds a store's commit ledger to one live model (which must be the unedited base when attached)."""

    def __init__(self, store: EditStore, model: torch.nn.Module, tokenizer: Any, *, model_name: str,
                 gates: GateConfig | None = None, base_hash: str | None = None):
        self.store, self.model, self.tok = store, model, tokenizer
        self.model_name = model_name
        self.gates = gates or GateConfig()
        self.base_hash = base_hash or weights_hash(model)
        self._base: dict[str, torch.Tensor] = {}   # exact copies of every matrix a commit ever touched
        self._synced_gen: str | None = None
        self._remove_orphans()
        self.sync(force=True)

    # ---- reading the ledger ---------------------------------------------
    def commits(self, status: str | None = None) -> list[dict[str, Any]]:
        """Ledger rows, oldest first (``status``: applied, reverted or dropped)."""
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        rows = list(self.store.db.query(f"SELECT * FROM commits {where} ORDER BY id", params))
        for r in rows:
            r["edit_ids"], r["params"] = json.loads(r["edit_ids"]), json.loads(r["params"])
            r["gates"], r["stats"] = json.loads(r["gates"]), json.loads(r["stats"])
        return rows

    def _load_deltas(self, row: dict[str, Any]) -> list[LowRankDelta]:
        if not row["file"]:
            raise StoreError(f"commit {row['id']} is {row['status']}; its deltas were erased")
        data = self.store.delta_blobs.get(row["file"])
        if hashlib.sha256(data).hexdigest() != row["file_sha256"]:
            raise StoreError(f"deltas of commit {row['id']} are damaged (checksum mismatch): {row['file']} in "
                             f"{self.store.delta_blobs.where}")
        tensors = load_safetensors(data)
        return [LowRankDelta(param, tensors[f"{param}::U"], tensors[f"{param}::V"]) for param in row["params"]]

    # ---- keeping the model equal to base + applied ledger ----------------------
    def sync(self, force: bool = False) -> bool:
        """Make the model's weights base + applied commits in order; returns True if anything changed."""
        gen = self.store._meta("ledger_gen")
        if not force and gen == self._synced_gen:
            return False
        rows = self.commits()
        foreign = {r["base_hash"] for r in rows} - {self.base_hash}
        if foreign:
            raise StoreError("this store's ledger was committed to other base weights "
                             f"({sorted(foreign)[0][:12]}...), not this model ({self.base_hash[:12]}...)")
        touched = [p for r in rows for p in r["params"]]
        new = [p for p in dict.fromkeys(touched) if p not in self._base]
        # A matrix seen for the first time is still at its base value: either nothing was applied to it in this
        # process, or force=True at attach time, when the model must be the unedited base.
        self._base.update(snapshot(self.model, new))
        restore(self.model, self._base)
        for row in rows:
            if row["status"] == "applied":
                apply_deltas(self.model, self._load_deltas(row))
        self._synced_gen = gen
        return True

    def _bump(self) -> None:
        self.store._set_meta("ledger_gen", str(int(self.store._meta("ledger_gen") or 0) + 1))

    # ---- committing -----------------------------------------------------------
    def commit(self, edits: Sequence[Edit], *, method: str = "memit", hparams: Any = None, stats: Any = None,
               gates: GateConfig | None = None, actor: str | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> CommitReport:
        """Write ``edits`` into the weights: MEMIT/EMMET as one batch, ROME one edit per commit.

        Each candidate commit is gated with its deltas applied temporarily; a
        refused one leaves the weights untouched and is listed in the report.
        ``stats``: second-moment statistics for the editor (a ``SecondMoment``
        for ROME, ``{layer: SecondMoment}`` for MEMIT/EMMET); None loads or
        computes them from the cache.
        """
        if method not in METHODS:
            raise ValidationError(f"unknown method {method!r}; use one of {METHODS}")
        edits = [self.store.get(e.id if isinstance(e, Edit) else e) for e in edits]  # type: ignore[arg-type]
        if not edits:
            raise ValidationError("nothing to commit")
        for e in edits:
            if e.kind != "fact" or e.status != "active":
                raise ValidationError(f"edit {e.id} is a {e.status} {e.kind} edit; only active fact edits can be "
                                      "committed to the weights")
            if e.committed:
                raise ConflictError(f"edit {e.id} is already committed")
        self.sync()
        t0 = time.perf_counter()
        report = CommitReport(method, candidates=[int(e.id) for e in edits])  # type: ignore[arg-type]
        groups = [[e] for e in edits] if method == "rome" else [edits]
        for i, group in enumerate(groups):
            result = _run_method(method, self.model, self.tok, group, hparams, stats)
            verdict = run_gates(self.model, self.tok, group, result.deltas, gates or self.gates)
            failed = [g.name for g in verdict if not g.passed]
            if failed:
                reason = refusal_reason(verdict)
                log.warning("commit of edits %s refused: %s", [e.id for e in group], reason)
                report.refused.append({"edits": [e.id for e in group], "failed": failed, "reason": reason,
                                       "gates": [g.to_dict() for g in verdict]})
            else:
                commit_id = self._land(method, group, result, verdict, actor)
                report.commit_ids.append(commit_id)
                report.committed_edits += [e.id for e in group]  # type: ignore[misc]
            if on_progress:
                on_progress(i + 1, len(groups))
        report.seconds = time.perf_counter() - t0
        return report

    def _land(self, method: str, edits: Sequence[Edit], result: EditResult, gates: list[GateResult],
              actor: str | None) -> int:
        """Persist the deltas (file first, then the row), then apply them to the live model."""
        from . import __version__

        params = [d.param for d in result.deltas]
        if len(set(params)) != len(params):
            raise StoreError("an editor returned two deltas for one parameter; merge them before committing")
        tensors = {}
        for d in result.deltas:
            tensors[f"{d.param}::U"], tensors[f"{d.param}::V"] = d.U.contiguous(), d.V.contiguous()
        name = f"commit-{uuid.uuid4().hex}.safetensors"
        data = save_safetensors(tensors, metadata={"memedit_version": __version__, "method": method,
                                                   "base_hash": self.base_hash, "model": self.model_name,
                                                   "edit_ids": json.dumps([e.id for e in edits])})
        digest = hashlib.sha256(data).hexdigest()
        stats = {k: v for k, v in result.stats.items() if isinstance(v, (int, float, str, list, dict))}
        with self.store._write():
            # Blob first, then the row naming it: on SQLite a crash between the two leaves an orphan file (removed
            # later), never a row without its deltas; on PostgreSQL both land in this one transaction.
            self.store.delta_blobs.put(name, data)
            cur = self.store._conn.execute(
                "INSERT INTO commits(ts, method, model, base_hash, edit_ids, params, file, file_sha256, status, "
                "gates, stats, memedit_version) VALUES (?,?,?,?,?,?,?,?, 'applied', ?,?,?)",
                (utcnow(), method, self.model_name, self.base_hash, json.dumps([e.id for e in edits]),
                 json.dumps(params), name, digest, json.dumps([g.to_dict() for g in gates], default=float),
                 json.dumps(stats, default=str), __version__))
            commit_id = int(cur.lastrowid)
            self._bump()
        self.store.mark_committed([e.id for e in edits], commit_id, actor=actor)  # type: ignore[misc]
        self.sync()
        return commit_id

    # ---- undo -------------------------------------------------------------------
    def revert(self, commit_id: int, *, actor: str | None = None) -> None:
        """Take a commit out of the weights (its file stays, so :meth:`redo` can put it back)."""
        row = self._row(commit_id)
        if row["status"] != "applied":
            raise ConflictError(f"commit {commit_id} is {row['status']}, not applied")
        self._set_status(commit_id, "reverted")
        self.store.mark_committed(row["edit_ids"], commit_id, committed=False, actor=actor, kind="revert")
        self.sync()

    def redo(self, commit_id: int, *, actor: str | None = None) -> None:
        """Put a reverted commit back, in its original place in the order."""
        row = self._row(commit_id)
        if row["status"] != "reverted":
            raise ConflictError(f"commit {commit_id} is {row['status']}; only reverted commits can be redone")
        for edit_id in row["edit_ids"]:
            edit = self.store.get(edit_id)
            if edit.status != "active" or edit.committed:
                raise ConflictError(f"edit {edit_id} is {edit.status}{' and committed' if edit.committed else ''}; "
                                    "commit it anew instead")
        self._load_deltas(row)  # fails clearly on a damaged file before anything changes
        self._set_status(commit_id, "applied")
        self.store.mark_committed(row["edit_ids"], commit_id, committed=True, actor=actor, kind="commit")
        self.sync()

    def _row(self, commit_id: int) -> dict[str, Any]:
        rows = [r for r in self.commits() if r["id"] == commit_id]
        if not rows:
            raise NotFoundError(f"no commit with id {commit_id}")
        return rows[0]

    def _set_status(self, commit_id: int, status: str) -> None:
        with self.store._write():
            self.store._conn.execute("UPDATE commits SET status = ? WHERE id = ?", (status, commit_id))
            self._bump()

    def _remove_orphans(self) -> None:
        """Delete stored deltas no ledger row names (a crash between writing a delta file and recording it)."""
        self.store.delta_blobs.remove_orphans({r["file"] for r in self.commits() if r["file"]})

    def model_state_matches_ledger(self) -> bool:
        """Recompute base + applied commits from scratch and compare with the live weights, exactly."""
        expected = {n: t.clone() for n, t in self._base.items()}
        for row in self.commits("applied"):
            for d in self._load_deltas(row):
                expected[d.param].addmm_(d.U.to(expected[d.param].dtype), d.V.T.to(expected[d.param].dtype))
        return all(torch.equal(get_parameter(self.model, n), t) for n, t in expected.items())
