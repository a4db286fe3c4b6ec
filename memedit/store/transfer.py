"""Export and import of edits as JSON lines.

>>> import io
>>> buf = io.StringIO()
>>> store.export_jsonl(buf)                       # doctest: +SKIP
3
>>> fresh.import_jsonl(io.StringIO(buf.getvalue()))  # doctest: +SKIP
3

The first line is a header ``{"format": "memedit-edits", "version": 1}``;
every other line is one edit with all its fields, keys sorted, ordered by id.
Forgotten edits are exported as tombstones (id, namespace, status, no
content). Importing into an empty store keeps ids, so exporting again gives
the identical file. Importing into a store whose ids collide gives the
imported edits new ids (links between them are remapped). An import is
validated whole before anything is written and lands in one transaction.
"""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

import numpy as np

from ..edits import Edit, validate_namespace
from ..errors import MAX_SQL_INT, ValidationError, check_id
from .chain import canonical_json

if TYPE_CHECKING:
    from .sqlite import EditStore

FORMAT = {"format": "memedit-edits", "version": 1}
#: the largest id an import keeps (2^53 - 1: exact in every JSON reader, and far from SQLite's last id)
MAX_KEPT_ID = 2**53 - 1
_BOOKKEEPING = ("id", "uid", "status", "supersedes", "superseded_by", "usage_count", "last_used_at",
                "committed", "created_at", "updated_at")


def export_jsonl(store: "EditStore", out: str | Path | IO[str], namespace: str | None = None) -> int:
    """Write the header and every edit (optionally one namespace's) to ``out``; returns the edit count."""
    if isinstance(out, (str, Path)):
        path = Path(out)
        if path.is_dir():
            raise ValidationError(f"cannot export to {path}: it is a folder; name a file in it")
        if not path.parent.is_dir():
            raise ValidationError(f"cannot export to {path}: the folder {path.parent} does not exist")
        if namespace is not None:
            store.require_namespace(namespace)  # before the file is created
        with open(path, "w", encoding="utf-8") as fh:
            return export_jsonl(store, fh, namespace)
    if namespace is not None:
        store.require_namespace(namespace)
    out.write(canonical_json(FORMAT) + "\n")
    n = 0
    last = 0
    while True:  # page through ids so a 100k store is not held in memory twice
        where = "WHERE id > ?" + (" AND namespace = ?" if namespace else "")
        params: list[Any] = [last] + ([namespace] if namespace else [])
        rows = list(store.db.query(f"SELECT id FROM edits {where} ORDER BY id LIMIT 1000", params))
        if not rows:
            return n
        for r in rows:
            out.write(canonical_json(store.get(r["id"]).to_dict()) + "\n")
            n += 1
        last = rows[-1]["id"]


def _parse(source: str | Path | IO[str] | Iterator[str]) -> list[dict[str, Any]]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValidationError(f"no such file: {path}")
        with open(path, "rb") as fh:
            return _parse(_utf8_lines(fh))  # type: ignore[arg-type]
    records = []
    for lineno, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"line {lineno}: not valid JSON ({exc.msg})") from None
        if lineno == 1 and isinstance(data, dict) and data.get("format") == FORMAT["format"]:
            if data.get("version") != FORMAT["version"]:
                raise ValidationError(f"line 1: unsupported export version {data.get('version')!r}")
            continue
        records.append((lineno, data))
    out = []
    for lineno, data in records:
        try:
            out.append(_validate_record(data))
        except ValidationError as exc:
            raise ValidationError(f"line {lineno}: {exc}") from None
    return out


def _utf8_lines(raw: IO[bytes]) -> Iterator[str]:
    """The lines of a binary file as text; a line that is not UTF-8 is a ValidationError naming it."""
    for lineno, line in enumerate(raw, 1):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"line {lineno}: not UTF-8 text (byte {line[exc.start]:#04x} at column "
                                  f"{exc.start + 1}); an export is UTF-8 JSON lines") from None


def _validate_record(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError("each line must be a JSON object")
    status = data.get("status", "active")
    for key in ("id", "supersedes", "superseded_by"):
        if data.get(key) is not None:
            check_id(data[key], key)
    uses = data.get("usage_count", 0)
    if isinstance(uses, bool) or not isinstance(uses, int) or not 0 <= uses <= MAX_SQL_INT:
        raise ValidationError(f"usage_count must be an integer in 0..{MAX_SQL_INT}")
    if status == "forgotten":
        validate_namespace(data.get("namespace", "default"))
        content = [k for k in ("subject", "prompt", "target_new", "target_true", "statement", "author", "source")
                   if data.get(k) is not None]
        if content or data.get("paraphrases"):
            raise ValidationError("a forgotten edit must not carry content")
        return {"tombstone": True, **{k: data.get(k) for k in _BOOKKEEPING}, "namespace": data.get("namespace", "default"),
                "kind": data.get("kind", "text")}
    edit = Edit.from_dict(data)
    return {"tombstone": False, "edit": edit, **{k: data.get(k) for k in _BOOKKEEPING}}


def import_jsonl(store: "EditStore", source: str | Path | IO[str], *, actor: str | None = None,
                 skip_existing: bool = False, progress: bool = False) -> dict[str, Any]:
    """Validate every line, then insert all edits in one transaction.

    Returns ``{"imported": n, "skipped": m, "remapped": bool}``.
    """
    from .sqlite import _progress

    records = _parse(source)
    uids = [r["uid"] for r in records if r.get("uid")]
    if len(set(uids)) != len(uids):
        raise ValidationError("the file lists the same uid twice")
    existing = {r["uid"] for r in store.db.query("SELECT uid FROM edits")}
    clashes = [u for u in uids if u in existing]
    if clashes and not skip_existing:
        raise ValidationError(f"{len(clashes)} edit(s) already exist in this store (uid {clashes[0]}); "
                              "use skip_existing to import only the new ones")
    records = [r for r in records if r.get("uid") not in existing]
    ids = [r["id"] for r in records if r.get("id") is not None]
    taken = {r["id"] for r in store.db.query("SELECT id FROM edits")}
    # Ids this store cannot keep get new ones, links remapped: ids already taken, and ids so large that the
    # store could take no new edit after them (or that a JSON client could not read back exactly).
    remap = bool(set(ids) & taken) or len(set(ids)) != len(ids) or any(i > MAX_KEPT_ID for i in ids)

    live = [r for r in records if not r["tombstone"]]
    texts = [r["edit"].search_texts() for r in live]
    flat = [t for ts in texts for t in ts]
    vecs = store.embedder.encode(flat, show_progress=progress) if flat else np.zeros((0, 1), np.float32)
    store._check_embedder()
    bar = _progress(len(records), "importing edits", progress)
    new_ids: dict[int, int] = {}
    with store._write():
        before = {r["id"] for r in store.db.query("SELECT id FROM edits")}
        gen = store._next_gen()
        offset = 0
        vec_of: dict[int, np.ndarray] = {}
        for i, (r, ts) in enumerate(zip(live, texts)):
            vec_of[id(r)] = vecs[offset:offset + len(ts)]
            offset += len(ts)
        inserted = []
        for r in records:
            keep = {k: r[k] for k in _BOOKKEEPING if r.get(k) is not None and k not in ("supersedes", "superseded_by")}
            if remap:
                keep.pop("id", None)
            if r["tombstone"]:
                edit = Edit(kind=r["kind"] if r["kind"] in ("fact", "text") else "text", namespace=r["namespace"],
                            status="forgotten")
                stored = store._insert(edit, np.zeros((0, 1), np.float32), gen, actor, "import", keep)
                _blank(store, stored.id)
            else:
                edit = replace(r["edit"], status=r.get("status") or "active")
                stored = store._insert(edit, vec_of[id(r)], gen, actor, "import", keep)
            if r.get("id") is not None:
                new_ids[r["id"]] = stored.id  # type: ignore[assignment]
            inserted.append((r, stored.id))
            bar.update(1)
        for r, new_id in inserted:  # links, remapped to the ids this store gave
            links = {k: new_ids.get(r[k]) if remap else r[k] for k in ("supersedes", "superseded_by")}
            store._conn.execute("UPDATE edits SET supersedes = ?, superseded_by = ? WHERE id = ?",
                                (links["supersedes"], links["superseded_by"], new_id))
        # Merging into a store that already had edits: an imported active fact replaces the store's own
        # live edit of the same fact, so the namespace keeps one answer. (Into an empty store this finds
        # nothing, which keeps the round trip exact.)
        for r, new_id in inserted:
            if not r["tombstone"] and r["edit"].kind == "fact" and (r.get("status") or "active") == "active":
                for old_id in store._live_same_key(new_id):
                    if old_id in before:
                        store._mark_superseded(old_id, new_id, gen, actor)
    bar.close()
    store._sync_index()
    return {"imported": len(records), "skipped": len(clashes) if skip_existing else 0, "remapped": remap}


def _blank(store: "EditStore", edit_id: int | None) -> None:
    """Turn a just-inserted tombstone row into a content-less forgotten row."""
    from .sqlite import _CONTENT_COLUMNS

    sets = ", ".join(f"{c} = NULL" for c in _CONTENT_COLUMNS)
    store._conn.execute(f"UPDATE edits SET {sets} WHERE id = ?", (edit_id,))


def dumps(store: "EditStore", namespace: str | None = None) -> str:
    """The export as one string (handy in tests and small scripts)."""
    buf = io.StringIO()
    export_jsonl(store, buf, namespace)
    return buf.getvalue()
