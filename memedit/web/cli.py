"""``memedit serve`` (the audit page and API) and ``memedit tokens`` (who may use them).

    memedit serve                              # http://127.0.0.1:8765/ui/ ; prints the admin token on first start
    memedit serve --port 9000 --policy-chat-status active --rate-limit 50/3600
    memedit serve --policy-file policy.json   # {"default": {...}, "namespaces": {"acme": {"chat_status": "active"}}}
    memedit tokens add alice --namespace 'acme/*' --write
    memedit tokens list --json
    memedit tokens revoke alice

Tokens live hashed in a JSON file beside a SQLite store (``x.db`` ->
``x.tokens.json``, or ``--tokens PATH``), and in the ``api_tokens`` table of a
PostgreSQL store, shared by every replica. FastAPI and uvicorn come with the
``web`` extra (``pip install 'memedit[web]'``); this module imports them only
when ``serve`` runs.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

from ..cli_common import StoreOpt, cli_errors

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False)
tokens_app = typer.Typer(help="Create, list and revoke API tokens for 'memedit serve'.", no_args_is_help=True,
                         add_completion=False)
app.add_typer(tokens_app, name="tokens", help="Create, list and revoke API tokens for 'memedit serve'.")

TokensOpt = Annotated[Optional[Path], typer.Option("--tokens", help="Token file (default: beside a SQLite store, x.tokens.json; a PostgreSQL store's own table).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _tokens(store: str | None, tokens: Path | None, *, create_admin: bool = True,
            must_exist: bool = False) -> Iterator[tuple[Any, str | None]]:
    """The tokens of ``--store`` (its table on PostgreSQL, the file beside SQLite) or ``--tokens PATH``."""
    from ..errors import NotFoundError
    from ..store.open import default_store_target, is_postgres_url, open_store
    from .auth import TokenFile, open_tokens, tokens_path_for

    target = store or default_store_target()
    if tokens is None and is_postgres_url(str(target)):
        with open_store(target) as s:
            yield open_tokens(s, create_admin=create_admin)
        return
    path = tokens if tokens is not None else tokens_path_for(target)
    if must_exist and not Path(path).exists():
        raise NotFoundError(f"no token file at {path}; 'memedit serve' or 'memedit tokens add' creates it")
    yield TokenFile.open(path, create_admin=create_admin)


def parse_rate(value: str) -> tuple[int, float]:
    """``"30/3600"`` -> (30 edits, 3600 s); ``"0"`` disables the limit."""
    from ..errors import ValidationError

    if value.strip() == "0":
        return 0, 3600.0
    n, sep, window = value.partition("/")
    try:
        return int(n), float(window) if sep else 3600.0
    except ValueError:
        raise ValidationError(f"rate limit must look like EDITS/SECONDS (e.g. 30/3600), got {value!r}") from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    policy_chat_status: Annotated[str, typer.Option(help="Status of new corrections from chat users: pending or active.")] = "pending",
    rate_limit: Annotated[str, typer.Option(help="New edits per token (and per author) in each namespace per window, EDITS/SECONDS (0: no limit).")] = "30/3600",
    policy_file: Annotated[Optional[Path], typer.Option(help='Per-namespace policies, JSON: {"default": {...}, "namespaces": {"acme": {"chat_status": "active", "max_edits": 100}}}; overrides the two options above.')] = None,
    public_read: Annotated[Optional[list[str]], typer.Option(help="Namespace anyone may read without a token (repeatable).")] = None,
    secure_cookies: Annotated[bool, typer.Option(help="Mark cookies Secure (when served behind HTTPS).")] = False,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Larger request bodies get 413, unread.")] = 1_000_000,
    model: Annotated[Optional[str], typer.Option(help="Answer chat apps at /v1/chat/completions (OpenAI-compatible) with this model: a packaged name or a local model directory. Without it /v1 answers 503.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="With --model: the longest answer, in tokens.")] = None,
    device: Annotated[str, typer.Option(help="With --model: cpu, cuda, cuda:1, mps ...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="With --model: float32, bfloat16 or float16.")] = "float32",
    store: StoreOpt = None, tokens: TokensOpt = None,
) -> None:
    """Serve the audit page (/ui/), the HTTP API (/api, schema at /openapi.json) and, with --model, an
    OpenAI-compatible chat endpoint (/v1/chat/completions) whose API keys are memedit tokens."""
    try:
        import uvicorn

        from ..policy import NamespacePolicy, Policy
        from ..store.open import open_store
        from .app import create_app
        from .auth import open_tokens
    except ModuleNotFoundError as exc:
        typer.echo(f"error: {exc.name} is missing; install the web extra: pip install 'memedit[web]'", err=True)
        raise typer.Exit(2) from None
    with cli_errors(False):
        max_edits, window = parse_rate(rate_limit)
        rules = NamespacePolicy(chat_status=policy_chat_status, max_edits=max_edits, window_s=window)
        s = open_store(store)
        token_file, secret = open_tokens(s, tokens)
        policy = Policy.from_file(s, policy_file) if policy_file else Policy(s, default=rules)
        chat = None
        if model is not None:
            from ..editor import Editor
            from .openai_api import ChatService

            # the model loads on the first question; a bad name or device fails here
            chat = ChatService(Editor(model=model, store=s, max_new_tokens=max_new_tokens, device=device, dtype=dtype),
                               model_id=model)
    if secret:
        typer.echo(f"Created the admin token (all namespaces, read and write). It is shown only now:\n\n  {secret}\n\n"
                   f"Stored hashed in {token_file.where}. Sign in at http://{host}:{port}/ui/login")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can try tokens; use HTTPS in front", host)
    app_ = create_app(s, tokens=token_file, policy=policy, public_read=public_read or (), secure_cookies=secure_cookies,
                      max_body_bytes=max_body_bytes, chat=chat)
    if chat is not None:
        typer.echo(f"OpenAI-compatible chat endpoint: http://{host}:{port}/v1 (model {model!r}; API key: a memedit token)")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="info")
    finally:
        s.close()


@tokens_app.command("add")
def tokens_add(
    name: Annotated[str, typer.Argument(help="A name for the token (shown as the actor in the audit log).")],
    namespace: Annotated[list[str], typer.Option("--namespace", "-n", help="Namespace, 'ns/*' or '*' (repeatable).")],
    write: Annotated[bool, typer.Option("--write", help="Allow changes (approve, reject, supersede, forget, add).")] = False,
    store: StoreOpt = None, tokens: TokensOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once."""
    with cli_errors(as_json), _tokens(store, tokens, create_admin=False) as (tf, _):
        secret = tf.create(name, namespaces=namespace, write=write)
    if as_json:
        print(json.dumps({"name": name, "token": secret, "namespaces": namespace, "write": write}))
    else:
        typer.echo(f"token {name} (shown only now): {secret}")


@tokens_app.command("list")
def tokens_list(store: StoreOpt = None, tokens: TokensOpt = None, as_json: JsonOpt = False) -> None:
    """List tokens (names and permissions; secrets are never stored)."""
    with cli_errors(as_json), _tokens(store, tokens, create_admin=False, must_exist=True) as (tf, _):
        rows = tf.list()
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['name']}\t{','.join(r['namespaces'])}\t{'write' if r['write'] else 'read'}\t{r['created_at']}")


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")], store: StoreOpt = None,
                  tokens: TokensOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a token: API calls and browser sessions using it fail from the next request."""
    with cli_errors(as_json), _tokens(store, tokens, create_admin=False, must_exist=True) as (tf, _):
        tf.revoke(name)
    if as_json:
        print(json.dumps({"revoked": name}))
    else:
        typer.echo(f"revoked {name}")
