// memedit audit page: buttons call the JSON API with the CSRF cookie's value in X-CSRF-Token.
"use strict";

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)memedit_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

function say(text, bad) {
  const el = document.getElementById("message");
  if (!el) return;
  el.textContent = text;
  el.className = "msg" + (bad ? " err" : "");
}

async function api(method, url, body) {
  const resp = await fetch(url, {
    method, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) throw new Error((data && data.error) || ("HTTP " + resp.status));
  return data;
}

const actions = {
  async approve(btn) {
    await api("POST", `/api/edits/${btn.dataset.id}/approve`);
    say(`Edit ${btn.dataset.id} approved.`);
  },
  async reject(btn) {
    const reasonEl = document.getElementById("reject-reason");
    const reason = reasonEl && reasonEl.value.trim() ? reasonEl.value.trim() : null;
    await api("POST", `/api/edits/${btn.dataset.id}/reject`, {reason});
    say(`Edit ${btn.dataset.id} rejected.`);
  },
  async supersede(btn) {
    const edit = {};
    if (btn.dataset.kind === "fact") {
      edit.subject = btn.dataset.subject; edit.prompt = btn.dataset.prompt;
      edit.target_new = document.getElementById("supersede-target").value;
    } else {
      edit.statement = document.getElementById("supersede-statement").value;
    }
    const created = await api("POST", `/api/edits/${btn.dataset.id}/supersede`, {edit});
    window.location.assign(`/ui/edits/${created.id}`);
    return "navigated";
  },
  "forget-ask"() {
    document.getElementById("forget-panel").classList.remove("hidden");
    document.getElementById("forget-confirm").focus();
    return "stay";
  },
  async forget(btn) {
    const typed = parseInt(document.getElementById("forget-confirm").value, 10);
    if (typed !== parseInt(btn.dataset.id, 10)) {
      say("Type the edit's id to confirm.", true);
      return "stay";
    }
    await api("POST", `/api/edits/${btn.dataset.id}/forget`, {confirm: typed});
    window.location.assign(`/ui/edits?namespace=${encodeURIComponent(btn.dataset.namespace)}&forgotten=${typed}`);
    return "navigated";
  },
};

function filterBody(namespace) {
  const form = document.getElementById("filters");
  const fd = new FormData(form);
  const body = {namespace, status: fd.getAll("status").filter((s) => s !== "forgotten")};
  for (const k of ["author", "source", "since", "until"]) { if (fd.get(k)) body[k] = fd.get(k); }
  if (fd.get("q") && fd.get("mode") !== "semantic") body.text = fd.get("q");
  if (fd.get("committed")) body.committed = fd.get("committed") === "yes";
  if (fd.get("min_uses")) body.min_uses = parseInt(fd.get("min_uses"), 10);
  return body;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const f of document.querySelectorAll("input.csrf-field")) f.value = csrf();
  const params = new URLSearchParams(window.location.search);
  if (params.get("forgotten")) say(`Edit ${params.get("forgotten")} was forgotten.`);

  document.body.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-action]");
    if (!btn) return;
    ev.preventDefault();
    btn.disabled = true;
    try {
      const result = await actions[btn.dataset.action](btn);
      if (result === undefined) setTimeout(() => window.location.reload(), 300);
    } catch (err) {
      say(err.message, true);
    } finally {
      btn.disabled = false;
    }
  });

  const bulk = document.getElementById("bulk-forget");
  if (bulk) {
    let pending = null;
    bulk.addEventListener("click", async () => {
      try {
        pending = filterBody(bulk.dataset.namespace);
        const r = await api("POST", "/api/forget-by-filter", {...pending, dry_run: true});
        pending.confirm_count = r.count;
        document.getElementById("bulk-count").textContent = `${r.count} edits match these filters.`;
        document.getElementById("bulk-panel").classList.remove("hidden");
      } catch (err) { say(err.message, true); }
    });
    document.getElementById("bulk-cancel").addEventListener("click", () => {
      document.getElementById("bulk-panel").classList.add("hidden");
      pending = null;
    });
    document.getElementById("bulk-confirm").addEventListener("click", async () => {
      if (!pending) return;
      try {
        const r = await api("POST", "/api/forget-by-filter", pending);
        say(`Forgot ${r.count} edits.`);
        setTimeout(() => window.location.reload(), 500);
      } catch (err) { say(err.message, true); }
    });
  }
});
