// registry-bot sandbox page: renders the channel from /sandbox/state and relays clicks.
"use strict";

const POLL_MS = 500;
const EMOJI = {
  warning: "⚠️", no_entry: "⛔", white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌",
  rocket: "🚀", hourglass: "⏳", hourglass_flowing_sand: "⏳", rewind: "⏪", bell: "🔔",
  arrows_counterclockwise: "🔄", wastebasket: "🗑️", lock: "🔒", tada: "🎉", mag: "🔍",
  information_source: "ℹ️", red_circle: "🔴", large_green_circle: "🟢", alarm_clock: "⏰",
  thumbsup: "👍", "+1": "👍", thumbsdown: "👎", stopwatch: "⏱️", microscope: "🔬",
  rotating_light: "🚨", snowflake: "❄️",
};

const page = {
  user: new URLSearchParams(location.search).get("user") || localStorage.getItem("sandbox-user") || "",
  users: {},
  timelineKey: "",
  modalKey: "",
  usersKey: "",
  homeKey: "",
  tab: "channel",
  lastCommand: "",
  pendingRun: "",
  channel: "",
  channelName: "",  // the training run the sidebar says was sent, until its notice is here
};

// -- Slack mrkdwn -------------------------------------------------------------------------

function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

// Slack escapes &, < and > in message text; turn them back before escaping for HTML.
function decode(text) {
  return String(text).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function emoji(html) {
  return html.replace(/:([a-z0-9_+-]+):/g, (all, name) => EMOJI[name] || all);
}

function mrkdwn(source) {
  const parts = String(source || "").split("```");
  // An unclosed fence is shown as text, as Slack does.
  if (parts.length % 2 === 0) parts[parts.length - 2] += "```" + parts.pop();
  return parts.map((part, i) => i % 2
    ? `<pre class="code">${esc(decode(part.replace(/^\n/, "")))}</pre>`
    : lines(part)).join("");
}

function lines(text) {
  const out = [];
  let quote = [];
  const flush = () => {
    if (quote.length) out.push(`<blockquote>${quote.join("<br>")}</blockquote>`);
    quote = [];
  };
  for (const line of text.split("\n")) {
    if (line.startsWith(">")) { quote.push(spans(line.slice(1))); continue; }
    flush();
    out.push(spans(line));
  }
  flush();
  return out.join("<br>").replace(/^(<br>)+|(<br>)+$/g, "");
}

function spans(text) {
  const tokens = [];
  const held = text.replace(/<([^<>]+)>/g, (all, inner) => {
    tokens.push(token(inner));
    return `\u0000${tokens.length - 1}\u0000`;
  });
  let html = esc(decode(held));
  html = html.replace(/`([^`]+)`/g, "<code>$1</code>");
  html = html.replace(/(^|[^\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])/g, "$1<b>$2</b>");
  html = html.replace(/(^|[^\w])_(\S(?:[^_]*?\S)?)_(?!\w)/g, "$1<i>$2</i>");
  html = html.replace(/(^|[^\w~])~(\S(?:[^~]*?\S)?)~(?![\w~])/g, "$1<s>$2</s>");
  html = emoji(html);
  return html.replace(/\u0000(\d+)\u0000/g, (all, i) => tokens[Number(i)]);
}

function token(inner) {
  const [target, label] = splitOnce(inner, "|");
  if (/^@[UWB]/.test(target)) {
    const id = target.slice(1);
    const name = (page.users[id] || {}).name || label || id;
    return `<span class="mention">@${esc(name)}</span>`;
  }
  if (target.startsWith("#C")) {
    // Slack shows a channel by its name, as the page's header does, never by its ID.
    const named = target.slice(1) === page.channel ? page.channelName : "";
    return `<span class="mention">#${esc(label || named || target.slice(1))}</span>`;
  }
  if (target.startsWith("!")) return `<span class="mention">@${esc(label || target.slice(1))}</span>`;
  const url = decode(target);
  const text = esc(decode(label || target));
  if (!/^(https?:|mailto:)/i.test(url)) return text;
  return `<a href="${esc(url)}" target="_blank" rel="noopener">${text}</a>`;
}

function splitOnce(text, sep) {
  const at = text.indexOf(sep);
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
}

function textObject(obj) {
  if (!obj) return "";
  return obj.type === "mrkdwn" ? mrkdwn(obj.text) : emoji(esc(obj.text || ""));
}

// -- Block Kit ----------------------------------------------------------------------------

function button(el, where, b, e) {
  const style = el.style ? ` ${el.style}` : "";
  const attrs = `data-testid="button-${esc(el.action_id || "")}" data-action="${esc(el.action_id || "")}"`
    + ` data-block="${b}" data-element="${e}" ${where}`;
  if (el.url) {
    return `<a class="btn${style}" href="${esc(el.url)}" target="_blank" rel="noopener" ${attrs}>`
      + `${esc(el.text.text)}</a>`;
  }
  return `<button type="button" class="btn${style}" ${attrs}>${emoji(esc(el.text.text))}</button>`;
}

function block(bk, where, b) {
  switch (bk.type) {
    case "header":
      return `<div class="b-header">${textObject(bk.text)}</div>`;
    case "section": {
      const fields = (bk.fields || []).map(f => `<div>${textObject(f)}</div>`).join("");
      const accessory = bk.accessory && bk.accessory.type === "button"
        ? `<div class="b-actions">${button(bk.accessory, where, b, 0)}</div>` : "";
      return `<div class="b-section">${textObject(bk.text)}`
        + (fields ? `<div class="b-fields">${fields}</div>` : "") + `${accessory}</div>`;
    }
    case "context":
      return `<div class="b-context">${(bk.elements || []).map(el =>
        el.type === "image" ? "" : textObject(el)).join(" ")}</div>`;
    case "actions":
      return `<div class="b-actions">${(bk.elements || []).map((el, e) =>
        el.type === "button" ? button(el, where, b, e) : "").join("")}</div>`;
    case "divider":
      return `<hr class="b-divider">`;
    default:
      return `<div class="b-unknown">[${esc(bk.type)} block]</div>`;
  }
}

function content(msg) {
  const where = msg.ephemeral
    ? `data-ephemeral="${esc(msg.id)}"` : `data-ts="${esc(msg.ts)}"`;
  if (msg.blocks && msg.blocks.length) return msg.blocks.map((bk, b) => block(bk, where, b)).join("");
  if (msg.files && msg.files.length && !msg.text) return files(msg.files);
  return `<div class="b-section">${mrkdwn(msg.text)}</div>` + files(msg.files || []);
}

// Files shared into the channel or a thread: a picture inline, as Slack shows it; any
// other file as its name.
function files(list) {
  return list.map(f => {
    const url = String(f.url_private || "");
    const local = url.startsWith(location.origin + "/files/") ? url : "";
    const title = `<div class="file-title">${esc(f.title || f.name || "")}</div>`;
    if (local && /^image\/(png|jpeg)$/.test(f.mimetype || "")) {
      return `<div class="b-file" data-testid="file">${title}`
        + `<img src="${esc(local)}" alt="${esc(f.title || f.name || "")}"></div>`;
    }
    return `<div class="b-file" data-testid="file">${title}</div>`;
  }).join("");
}

// Times as registry-bot writes them everywhere: 24-hour, in UTC.
function clock(ts) {
  const at = new Date(Number(ts) * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(at.getUTCHours())}:${two(at.getUTCMinutes())} UTC`;
}

// The command the visitor typed: Slack shows it to nobody, the sandbox to its sender.
function echo(msg) {
  const name = (page.users[msg.user] || {}).name || msg.user;
  return `<div class="msg ephemeral echo" data-testid="command-echo" data-ts="${esc(msg.ts)}">`
    + `<div class="avatar person">${esc(name.slice(0, 1).toUpperCase())}</div><div class="body">`
    + `<div class="meta"><span class="who">${esc(name)}</span>${clock(msg.ts)}</div>`
    + `<div class="only-you">Only visible to you: the command you sent</div>`
    + `<div class="b-section"><code class="typed">${esc(msg.text)}</code></div></div></div>`;
}

function message(msg, kind) {
  if (msg.echo) return echo(msg);
  const slack = msg.from_slack;
  const who = slack ? "Slackbot" : "registry-bot";
  const cls = `msg${msg.ephemeral ? " ephemeral" : ""}`;
  const testid = msg.ephemeral ? "ephemeral" : kind;
  return `<div class="${cls}" data-testid="${testid}" data-ts="${esc(msg.ts)}">`
    + `<div class="avatar${slack ? " slackbot" : ""}">${slack ? "S" : "R"}</div><div class="body">`
    + `<div class="meta"><span class="who">${who}</span>${slack ? "" : '<span class="badge">APP</span>'}`
    + `${clock(msg.ts)}${msg.edited ? '<span class="edited">(edited)</span>' : ""}</div>`
    + (msg.ephemeral ? `<div class="only-you">Only visible to you</div>` : "")
    + `${content(msg)}</div></div>`;
}

function entry(msg) {
  const replies = msg.replies || [];
  const thread = replies.length
    ? `<div class="thread" data-testid="thread"><div class="count">${replies.length} `
      + `${replies.length === 1 ? "reply" : "replies"}</div>`
      + replies.map(r => message(r, "reply")).join("") + `</div>`
    : "";
  return `<div class="entry">${message(msg, "message")}${thread}</div>`;
}

// -- the page -----------------------------------------------------------------------------

function renderTimeline(messages) {
  const key = JSON.stringify(messages) + JSON.stringify(page.users);
  if (key === page.timelineKey) return;
  page.timelineKey = key;
  const box = document.getElementById("timeline");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.innerHTML = messages.length ? messages.map(entry).join("")
    : `<div class="empty">No messages yet: the Staging notice appears here once the worker posts it.</div>`;
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// The app's Home tab: what the bot last published for this user (views.publish).
function renderHome(home) {
  const key = JSON.stringify(home) + JSON.stringify(page.users);
  if (key === page.homeKey) return;
  page.homeKey = key;
  const box = document.getElementById("home");
  if (!home) {
    box.innerHTML = `<div class="empty">Opening the Home tab asks the bot to publish it…</div>`;
    return;
  }
  const where = `data-view="${esc(home.id)}"`;
  box.innerHTML = `<div class="msg home-view" data-testid="home-view">`
    + (home.blocks || []).map((bk, b) => block(bk, where, b)).join("") + `</div>`;
}

function showTab(tab) {
  page.tab = tab;
  const home = tab === "home";
  document.getElementById("tab-home").classList.toggle("active", home);
  document.getElementById("tab-channel").classList.toggle("active", !home);
  document.getElementById("home").hidden = !home;
  document.getElementById("timeline").hidden = home;
  document.getElementById("composer").hidden = home;
  // Slack sends app_home_opened each time the tab is opened; the bot then publishes it.
  if (home) post("/sandbox/home", {});
}

function renderUsers(users) {
  const key = JSON.stringify(users);
  page.users = Object.fromEntries(users.map(u => [u.id, u]));
  if (key === page.usersKey) return;
  page.usersKey = key;
  const people = users.filter(u => u.role !== "bot");
  if (!page.users[page.user] || page.users[page.user].role === "bot") page.user = (people[0] || {}).id || "";
  const picker = document.getElementById("user-picker");
  picker.innerHTML = people.map(u => `<option value="${esc(u.id)}">${esc(u.name)}`
    + `${u.role ? " (" + esc(u.role) + ")" : ""}</option>`).join("");
  picker.value = page.user;
}

function renderServed(served) {
  const box = document.getElementById("served");
  if (!served || !served.url) { box.textContent = "not configured"; return; }
  const link = `<a href="${esc(served.url)}/version" target="_blank" rel="noopener">/version</a>`;
  box.innerHTML = served.version
    ? `${esc(served.model || "model")} <span class="version">v${esc(served.version)}</span><br>`
      + `<span class="hint">served now (${link})</span>`
    : `<span class="down">${esc(served.error || "nothing served yet")}</span><br>`
      + `<span class="hint">${link}</span>`;
}

function renderModal(modal) {
  const root = document.getElementById("modal-root");
  const key = modal ? JSON.stringify([modal.view.id, modal.view.hash, modal.errors]) : "";
  if (key === page.modalKey) return;
  page.modalKey = key;
  if (!modal) { root.innerHTML = ""; return; }
  const typed = {};
  root.querySelectorAll("[data-input-block]").forEach(el => { typed[el.dataset.inputBlock] = el.value; });
  const view = modal.view;
  const body = (view.blocks || []).map((bk, b) => bk.type === "input" ? inputBlock(bk, modal.errors)
    : block(bk, "", b)).join("");
  root.innerHTML = `<div class="overlay"><div class="modal" data-testid="modal" data-view="${esc(view.id)}">`
    + `<div class="m-title">${textObject(view.title)}</div><div class="m-body">${body}</div>`
    + `<div class="m-foot"><button type="button" class="btn" data-testid="modal-cancel">`
    + `${esc((view.close || {}).text || "Cancel")}</button>`
    + (view.submit ? `<button type="button" class="btn primary" data-testid="modal-submit">`
      + `${esc(view.submit.text)}</button>` : "")
    + `</div></div></div>`;
  root.querySelectorAll("[data-input-block]").forEach(el => {
    if (typed[el.dataset.inputBlock] !== undefined) el.value = typed[el.dataset.inputBlock];
  });
  const first = root.querySelector("[data-input-block]");
  if (first) first.focus();
}

function inputBlock(bk, errors) {
  const el = bk.element || {};
  const initial = el.initial_value || "";
  const attrs = `data-testid="modal-input-${esc(bk.block_id)}" data-input-block="${esc(bk.block_id)}"`
    + ` data-action-id="${esc(el.action_id || "")}" maxlength="${el.max_length || 3000}"`;
  const field = el.multiline ? `<textarea ${attrs}>${esc(initial)}</textarea>`
    : `<input ${attrs} value="${esc(initial)}">`;
  const error = errors[bk.block_id]
    ? `<div class="m-error" data-testid="modal-error">${esc(errors[bk.block_id])}</div>` : "";
  // Slack marks inputs the app made optional.
  const optional = bk.optional ? ` <span class="optional">(optional)</span>` : "";
  return `<div class="b-input"><label>${textObject(bk.label)}${optional}</label>${field}${error}</div>`;
}

function render(state) {
  document.title = state.header;
  document.querySelector("[data-testid=header]").textContent = state.header;
  document.getElementById("channel-name").textContent = state.channel_name;
  // The ID is for developers only: Slack shows a channel by its name.
  document.getElementById("channel-name").title = state.channel;
  page.channel = state.channel;
  page.channelName = state.channel_name;
  renderUsers(state.users);
  renderServed(state.served);
  renderTimeline(state.messages);
  renderHome(state.home);
  renderModal(state.modal);
  renderTrainNote(state.messages);
  document.getElementById("train").disabled = !state.can_train || page.training;
  document.getElementById("alert").disabled = !state.can_alert || page.alerting;
}

// "Sent training run …, its notice follows" is news only until the notice is here.
function renderTrainNote(messages) {
  if (!page.pendingRun) return;
  const shown = messages.some(m => !m.ephemeral && JSON.stringify(m.blocks || []).includes(page.pendingRun));
  if (!shown) return;
  page.pendingRun = "";
  document.getElementById("train-status").textContent = "";
}

async function poll() {
  try {
    const resp = await fetch(`/sandbox/state?user=${encodeURIComponent(page.user)}`);
    if (resp.ok) render(await resp.json());
  } catch (err) {
    status("The sandbox server is not answering.");
  }
}

function status(text) {
  document.getElementById("status").textContent = text || "";
}

async function post(path, body) {
  const resp = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({user: page.user, ...body})});
  const answer = await resp.json().catch(() => ({error: `HTTP ${resp.status}`}));
  status(answer.error || "");
  poll();
  return answer;
}

// -- what the visitor does ------------------------------------------------------------------

function onClick(event) {
  const btn = event.target.closest("button[data-action]");
  if (!btn) return;
  btn.disabled = true;
  post("/sandbox/click", {ts: btn.dataset.ts || "", ephemeral: btn.dataset.ephemeral || "",
    view: btn.dataset.view || "", block: Number(btn.dataset.block),
    element: Number(btn.dataset.element), action_id: btn.dataset.action})
    .finally(() => { btn.disabled = false; });
}

async function onModal(event) {
  const modal = event.target.closest("[data-testid=modal]");
  if (!modal) return;
  const viewId = modal.dataset.view;
  if (event.target.closest("[data-testid=modal-cancel]")) {
    page.modalKey = "";
    await post("/sandbox/cancel", {view_id: viewId});
  } else if (event.target.closest("[data-testid=modal-submit]")) {
    const values = {};
    modal.querySelectorAll("[data-input-block]").forEach(el => {
      values[el.dataset.inputBlock] = {[el.dataset.actionId]: el.value};
    });
    const submit = event.target.closest("[data-testid=modal-submit]");
    submit.disabled = true;
    try {
      await post("/sandbox/submit", {view_id: viewId, values});
    } finally {
      submit.disabled = false;
    }
  }
}

async function onCommand(event) {
  event.preventDefault();
  const input = document.getElementById("command");
  const text = input.value.trim();
  if (!text) return;
  page.lastCommand = text;
  input.value = "";
  const answer = await post("/sandbox/command", {text});
  // After an error the text stays, to fix or send again (unless they typed on meanwhile).
  if (answer.error && !input.value) input.value = text;
}

// Up in an empty box brings back the last command, as in Slack and in a shell.
function onCommandKey(event) {
  const input = event.target;
  if (event.key === "ArrowUp" && !input.value && page.lastCommand) {
    event.preventDefault();
    input.value = page.lastCommand;
  }
}

async function onTrain() {
  const note = document.getElementById("train-status");
  page.training = true;
  document.getElementById("train").disabled = true;
  note.textContent = "Training and sending the event…";
  page.pendingRun = "";
  try {
    const answer = await post("/sandbox/train", {});
    note.textContent = answer.message || answer.error || "";
    // The notice names its run by the first 12 characters of the run ID.
    page.pendingRun = (answer.run_id || "").slice(0, 12);
  } finally {
    page.training = false;
    poll();
  }
}

async function onAlert() {
  const note = document.getElementById("alert-status");
  page.alerting = true;
  document.getElementById("alert").disabled = true;
  note.textContent = "Posting the alert as Alertmanager would…";
  try {
    const answer = await post("/sandbox/alert", {});
    note.textContent = answer.message || answer.error || "";
  } finally {
    page.alerting = false;
    poll();
  }
}

// The gate inside MLflow: a person moves a hand-registered version into Production in
// MLflow itself; MLflow refuses, and the request appears in the channel as a notice.
async function onPromote() {
  const note = document.getElementById("promote-status");
  const button = document.getElementById("promote");
  button.disabled = true;
  note.textContent = "Training a run, registering it in MLflow and moving it to Production…";
  try {
    const answer = await post("/sandbox/promote", {});
    note.textContent = answer.message || answer.error || "";
  } finally {
    button.disabled = false;
    poll();
  }
}

function onPick(event) {
  page.user = event.target.value;
  localStorage.setItem("sandbox-user", page.user);
  page.timelineKey = page.modalKey = page.homeKey = "";
  if (page.tab === "home") showTab("home");
  poll();
}

document.getElementById("timeline").addEventListener("click", onClick);
document.getElementById("home").addEventListener("click", onClick);
document.getElementById("tab-home").addEventListener("click", () => showTab("home"));
document.getElementById("tab-channel").addEventListener("click", () => showTab("channel"));
document.getElementById("modal-root").addEventListener("click", onModal);
document.getElementById("composer").addEventListener("submit", onCommand);
document.getElementById("command").addEventListener("keydown", onCommandKey);
document.getElementById("train").addEventListener("click", onTrain);
document.getElementById("alert").addEventListener("click", onAlert);
document.getElementById("promote").addEventListener("click", onPromote);
document.getElementById("user-picker").addEventListener("change", onPick);
poll();
setInterval(poll, POLL_MS);
