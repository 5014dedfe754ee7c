// The agent's page: live status, consent (terms, grant, withdraw) and sessions (see, preview,
// delete). Plain JavaScript, no build step, nothing loaded from the network.
"use strict";

const STATUS_EVERY_MS = 1000;
const SESSIONS_EVERY_MS = 5000;
const STATE_WORDS = {
  idle: "Idle", waiting: "Waiting for a game", recording: "Recording", paused: "Paused",
  stopping: "Stopping", unknown: "Unknown",
};
const CHECK_MARKS = { ok: "✓ OK", warning: "⚠ warning", error: "✗ problem" };

let terms = null;           // {version, sha256, text} as shown on the page
let recordedKinds = [];     // the scope kinds capture records (the ones it offers)
let lastSessionsJson = "";
let lastSessionKey = "";
let hadGrants = null;       // whether anyone had consented at the last refresh (null: not yet)
let afterReview = false;    // the player sends each session to the collector after review

// --- talking to the agent ------------------------------------------------------------------
// The page signs in with an HttpOnly cookie (set when the one-time address was opened): the
// browser sends it with every same-origin request, and no script here can read it.
async function api(path, body) {
  const options = { headers: {}, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    showOffline(true);
    throw new Error("the agent is not answering (has it stopped?)");
  }
  showOffline(false);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `the agent answered ${response.status}`);
  return data;
}

function showOffline(offline) {
  const banner = document.getElementById("offline");
  banner.hidden = !offline;
  banner.textContent = offline ? "The agent is not answering: it may have stopped. " +
    "Start it again with `capture agent`." : "";
}

// --- small DOM helpers ---------------------------------------------------------------------
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node.textContent !== text) node.textContent = text;  // unchanged text is not re-announced
}

function when(utc) {
  if (!utc) return "–";
  const date = new Date(utc);
  return isNaN(date) ? utc : date.toLocaleString();
}

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${r} s` : `${seconds.toFixed(1)} s`;
}

function checkList(checks) {
  const list = el("ul", { class: "checks" });
  for (const c of checks) {
    // "⚠ warning Dropped frames: Too many pictures were lost… (12 frame slots dropped (3.1 %))"
    list.append(el("li", { class: "check check-" + c.level, "data-check": c.name },
      el("span", { class: "mark", text: CHECK_MARKS[c.level] || c.level }), " ",
      el("span", { class: "check-name", text: c.title || c.name }),
      c.sentence ? el("span", { class: "check-sentence", text: ": " + c.sentence }) : null,
      c.detail ? el("span", { class: "check-detail muted", text: ` (${c.detail})` }) : null));
  }
  return list;
}

// A button that asks "are you sure?" in place before doing something for good.
function confirmButton(label, question, yesLabel, action) {
  const box = el("span", { class: "confirm" });
  const start = el("button", { type: "button", class: "danger", text: label });
  start.addEventListener("click", () => {
    const yes = el("button", { type: "button", class: "danger", text: yesLabel });
    const no = el("button", { type: "button", text: "Cancel" });
    const ask = el("span", { class: "ask", role: "group" },
      el("span", { text: question + " " }), yes, " ", no);
    no.addEventListener("click", () => { ask.replaceWith(start); start.focus(); });
    yes.addEventListener("click", async () => {
      yes.disabled = no.disabled = true;
      try { await action(); } finally { if (ask.isConnected) ask.replaceWith(start); }
    });
    start.replaceWith(ask);
    no.focus();
  });
  box.append(start);
  return box;
}

// --- status ----------------------------------------------------------------------------------
async function refreshStatus() {
  let s;
  try { s = await api("/api/status"); } catch (err) { return; }
  const state = s.state || "unknown";
  const badge = document.getElementById("status-state");
  badge.textContent = STATE_WORDS[state] || state;
  badge.className = "state state-" + state;
  setText("status-game", s.game ? s.game : "");
  setText("status-reason", s.reason || "");
  const notify = document.getElementById("status-notify");
  notify.hidden = !s.notifications;
  setText("status-notify", s.notifications ? "Note: " + s.notifications + "." : "");
  setText("status-since", when(s.since_utc));
  const b = s.backend;
  setText("status-backend", b ? [b.name, b.state, b.detail].filter(Boolean).join(" · ") : "–");
  setText("status-session", s.session_id
    ? s.session_id + (s.segment != null ? `, segment ${s.segment}` : "") : "–");
  const box = document.getElementById("status-checks-box");
  const checks = s.last_segment_checks || [];
  box.hidden = checks.length === 0;
  document.getElementById("status-checks").replaceChildren(...checkList(checks).children);
  const uploads = JSON.stringify(s.uploads || []);
  const key = `${s.state}|${s.session_id}|${s.segment}|${uploads}`;
  if (key !== lastSessionKey) {  // a recording started, stopped or rolled over: new sessions
    lastSessionKey = key;
    refreshSessions();
  }
}

// --- consent ---------------------------------------------------------------------------------
async function refreshConsent() {
  const c = await api("/api/consent");
  terms = c.terms;
  renderTerms(document.getElementById("terms"), c.terms.text);
  setText("terms-raw", c.terms.text);
  setText("terms-version", c.terms.version);
  setText("terms-sha", c.terms.sha256);
  setText("grant-purpose", c.defaults.purposes.join("; "));
  setText("grant-controller", `${c.controller.name} (${c.controller.contact})`);
  setText("grant-data-dir", c.data_dir);
  const license = document.getElementById("grant-license");
  if (!license.value) license.value = c.defaults.license;
  const boxes = document.getElementById("scope-boxes");
  if (!boxes.children.length) {
    for (const kind of c.scope_kinds) {
      const sensitive = c.sensitive_scope.includes(kind);
      const input = el("input", { type: "checkbox", id: "scope-" + kind, name: "scope",
                                  value: kind });
      // Nothing is ticked in advance: the player chooses each kind. Only kinds capture records
      // are offered (no audio: nothing records sound).
      boxes.append(el("div", { class: "scope-kind" }, input,
        el("label", { for: "scope-" + kind },
          el("strong", { text: kind }), ": " + c.scope_descriptions[kind] +
          (sensitive ? " (sensitive: only if you tick it)" : ""))));
    }
  }
  const problem = document.getElementById("consent-problem");
  problem.hidden = !c.problem;
  problem.textContent = c.problem || "";
  recordedKinds = c.scope_kinds;
  renderGrants(c.active);
  renderHistory(c.history);
}

// A grant's kinds; one capture does not record (audio, in grants made before it was withdrawn
// from the offer) is marked so.
function scopeText(scope) {
  return scope.map((k) => recordedKinds.includes(k) ? k : `${k} (never recorded)`).join(", ");
}

// The terms are Markdown: headings, paragraphs, "- " lists and `code`; shown with the same words.
function renderTerms(box, text) {
  const inline = (line) => line.split("`").map((part, i) =>
    i % 2 ? el("code", { text: part }) : document.createTextNode(part));
  const blocks = text.trim().split(/\n\s*\n/).map((block) => {
    const heading = /^(#{1,6}) (.*)$/s.exec(block);
    if (heading) return el(heading[1].length === 1 ? "h4" : "h5", { text: heading[2] });
    if (block.startsWith("- ")) {
      const items = block.split(/\n(?=- )/)
        .map((item) => item.slice(2).replace(/\s*\n\s*/g, " "));
      return el("ul", {}, ...items.map((item) => el("li", {}, ...inline(item))));
    }
    return el("p", {}, ...inline(block.replace(/\s*\n\s*/g, " ")));
  });
  box.replaceChildren(...blocks);
}

function renderGrants(grants) {
  document.getElementById("grants-empty").hidden = grants.length > 0;
  // The form folds away once someone consented (its summary opens it again to grant another),
  // and opens by itself when no consent is left.
  const has = grants.length > 0;
  if (has !== hadGrants) {
    const box = document.getElementById("grant-box");
    box.open = !has;
    setText("grant-title", has ? "Give another consent" : "Give consent");
    hadGrants = has;
  }
  const list = document.getElementById("grants");
  list.replaceChildren(...grants.map((g) => {
    const games = g.games.join(", ");
    return el("li", { class: "grant", "data-receipt": g.receipt_id },
      el("div", {},
        el("strong", { class: "grant-player", text: g.player }), " may be recorded in ",
        el("strong", { class: "grant-games", text: games })),
      el("div", { class: "muted small",
                  text: `recording: ${scopeText(g.scope)} · licence ${g.license} · since ` +
                        `${when(g.timestamp)} · terms ${g.terms_version}` +
                        (g.synthetic ? " · demo" : "") }),
      confirmButton("Withdraw…",
        `Withdraw ${g.player}'s consent for ${games} and delete their recordings of it ` +
        "from this computer?", "Yes, withdraw and delete",
        () => revoke(g)));
  }));
}

function renderHistory(entries) {
  document.getElementById("history").replaceChildren(...entries.slice().reverse().map((e) => {
    const what = e.kind === "grant"
      ? `${e.player} consented to ${e.games.join(", ")} (${scopeText(e.scope)})`
      : `${e.player} withdrew ` + e.withdrawn.map((w) => w.games.join(", ")).join("; ");
    return el("li", { text: `${when(e.timestamp)}: ${what} [${e.method}]` });
  }));
}

async function grant(event) {
  event.preventDefault();
  const form = event.target;
  const message = document.getElementById("grant-message");
  const scope = [...form.querySelectorAll('input[name="scope"]:checked')].map((i) => i.value);
  const body = {
    player: form.player.value,
    games: form.games.value.split(",").map((g) => g.trim()).filter(Boolean),
    scope, license: form.license.value, agreed: form.agreed.checked,
    terms_version: terms && terms.version, terms_sha256: terms && terms.sha256,
  };
  message.className = "message";
  try {
    const answer = await api("/api/grant", body);
    const r = answer.receipt;
    message.textContent = `Consent recorded for ${r.player}: ${r.games.join(", ")} ` +
      `(receipt ${r.receipt_id}).` + (answer.warning ? " " + answer.warning : "");
    message.classList.add("ok");
    document.getElementById("grant-box").open = false;
    form.games.value = "";
    form.agreed.checked = false;
    for (const box of form.querySelectorAll('input[name="scope"]')) box.checked = false;
  } catch (err) {
    message.textContent = "Not recorded: " + err.message;
    message.classList.add("error");
  }
  await refreshConsent();
}

async function revoke(g) {
  const message = document.getElementById("grant-message");
  message.className = "message";
  try {
    const answer = await api("/api/revoke", { player: g.player, receipt_id: g.receipt_id });
    const games = answer.withdrawn.flatMap((w) => w.games).join(", ") || "nothing new";
    const problems = answer.problems || [];
    message.textContent = `Withdrawn: ${games}. Deleted ${answer.deleted.length} local ` +
      "session(s)." + (answer.kept_games.length
        ? ` Kept sessions of ${answer.kept_games.join(", ")}: another consent covers them.` : "") +
      (problems.length ? ` ${problems.length} session(s) could not be checked or deleted: ` +
        problems.map((p) => `${p.path} (${p.reason})`).join("; ") +
        ". Delete them from the list below, then withdraw again." : "") +
      (answer.warning ? " " + answer.warning : "") +
      ((answer.collector || []).length ? " " + answer.collector.join(" ") : "");
    message.classList.add(problems.length ? "error" : "ok");
  } catch (err) {
    message.textContent = "Not withdrawn: " + err.message;
    message.classList.add("error");
  }
  await Promise.all([refreshConsent(), refreshSessions()]);
}

// --- sessions --------------------------------------------------------------------------------
async function refreshSessions() {
  let data;
  try { data = await api("/api/sessions"); } catch (err) { return; }
  const json = JSON.stringify(data);
  if (json === lastSessionsJson) return;  // unchanged: keep playing previews as they are
  lastSessionsJson = json;
  setText("sessions-dir", data.data_dir);
  document.getElementById("sessions-empty").hidden = data.sessions.length > 0;
  afterReview = !!data.upload_after_review;
  document.getElementById("sessions").replaceChildren(...data.sessions.map(sessionCard));
}

function sessionCard(s) {
  const picture = el("div", { class: "picture" });
  let previewButton = null;
  if (s.thumbnail) {
    const img = el("img", { src: s.thumbnail, class: "thumb",
                            alt: `Picture from the ${s.game || "game"} session of ${when(s.start)}` });
    picture.append(img);
    const show = (on) => togglePreview(picture, img, s, on, previewButton);
    previewButton = el("button", { type: "button", class: "preview-button", "aria-pressed": "false",
                                   text: "Preview" });
    previewButton.addEventListener("click", () =>
      show(previewButton.getAttribute("aria-pressed") !== "true"));
    picture.addEventListener("mouseenter", () => show(true));
    picture.addEventListener("mouseleave", () => show(false));
  } else {
    picture.append(el("div", { class: "no-thumb", text: s.media_problem || "no picture" }));
  }
  const stats = s.stats || {};
  const facts = el("dl", { class: "facts" },
    el("dt", { text: "Started" }), el("dd", { text: when(s.start) }),
    el("dt", { text: "Length" }), el("dd", { text: duration(s.duration_s) }),
    el("dt", { text: "Status" }), el("dd", { class: "status-" + s.status,
                                             text: s.status + (s.problem ? ` (${s.problem})` : "") }),
    el("dt", { text: "Frames" }), el("dd", { text: s.frames == null ? "–" :
      `${s.frames}` + (stats.fps_achieved ? ` at ${stats.fps_achieved.toFixed(1)} fps` : "") +
      (stats.dropped_frames ? `, ${stats.dropped_frames} dropped` : "") }),
    s.segments != null ? el("dt", { text: "Segments" }) : null,
    s.segments != null ? el("dd", { text: String(s.segments) }) : null,
    s.run ? el("dt", { text: "Part" }) : null,
    s.run ? el("dd", { text: `segment ${s.run.segment} of play session ${s.run.id}` }) : null,
    el("dt", { text: "Inputs" }), el("dd", { text: String(s.inputs) }),
    s.upload ? el("dt", { text: "Upload" }) : null,
    s.upload ? el("dd", { class: "upload-" + s.upload.status, text: uploadWords(s.upload) })
             : null);
  const card = el("li", { class: "card", "data-session": s.id },
    picture,
    el("div", { class: "card-body" },
      el("h3", { class: "card-game", text: s.game || "unknown game" }),
      el("p", { class: "muted small session-id", text: s.id }),
      facts,
      s.checks && s.checks.length ? checkList(s.checks) : null,
      el("div", { class: "actions" }, sendButton(s), previewButton,
        confirmButton("Delete…", "Delete this session for good?", "Yes, delete",
          () => deleteSession(s.id)))));
  return card;
}

const UPLOAD_WORDS = { waiting: "waiting (you can still delete it)", queued: "queued",
                       accepted: "accepted by the collector", rejected: "rejected by the collector",
                       refused: "not uploaded" };

// Waiting for the player to look at it first (upload after review, not sent yet).
function awaitsReview(u) {
  return afterReview && u && u.status === "waiting" && !u.released;
}

function uploadWords(u) {
  if (u.status === "uploading") return `uploading, ${Math.floor(u.percent)} %`;
  if (awaitsReview(u)) return "not sent: look at it, then send it or delete it";
  const words = u.status === "waiting" && u.released ? "queued"
    : UPLOAD_WORDS[u.status] || u.status;
  return u.reason ? `${words}: ${u.reason}` : words;
}

// "Send to COLLECTOR": the player releases a reviewed session for upload.
function sendButton(s) {
  if (!awaitsReview(s.upload)) return null;
  const button = el("button", { type: "button", class: "send-button",
                                text: `Send to ${s.collector || "the collector"}` });
  button.addEventListener("click", async () => {
    button.disabled = true;
    const message = document.getElementById("sessions-message");
    message.className = "message";
    try {
      await api("/api/release", { id: s.id });
      message.textContent = `Session ${s.id} will be sent to ${s.collector || "the collector"}.`;
      message.classList.add("ok");
    } catch (err) {
      message.textContent = "Not sent: " + err.message;
      message.classList.add("error");
      button.disabled = false;
    }
    await refreshSessions();
  });
  return button;
}

function togglePreview(picture, img, s, on, button) {
  const existing = picture.querySelector("video");
  if (on && !existing) {
    const video = el("video", { src: s.preview, class: "preview", muted: "",
                                loop: "", playsinline: "", "aria-label": "Preview of the session" });
    video.muted = true;
    img.hidden = true;
    picture.append(video);
    video.play().catch(() => {});
  } else if (!on && existing) {
    existing.remove();
    img.hidden = false;
  }
  if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
}

async function deleteSession(id) {
  const message = document.getElementById("sessions-message");
  message.className = "message";
  try {
    await api("/api/delete", { id });
    message.textContent = `Deleted session ${id}.`;
    message.classList.add("ok");
  } catch (err) {
    message.textContent = "Not deleted: " + err.message;
    message.classList.add("error");
  }
  await refreshSessions();
}

// --- start -----------------------------------------------------------------------------------
document.getElementById("grant-form").addEventListener("submit", grant);
refreshConsent().catch((err) => {
  const problem = document.getElementById("consent-problem");
  problem.hidden = false;
  problem.textContent = "Consent could not be loaded: " + err.message;
});
refreshStatus();
refreshSessions();
setInterval(refreshStatus, STATUS_EVERY_MS);
setInterval(refreshSessions, SESSIONS_EVERY_MS);
