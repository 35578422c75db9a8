/* smtpwire web inbox: one page over the mailpit-compatible JSON API -- the
 * message list, live updates, search, and the actions on messages.
 *
 * Every string that comes from a message is put into the page with textContent or
 * as an attribute value, never parsed as HTML: a mail is hostile input.  The HTML
 * body itself is only shown inside a sandboxed iframe (no scripts, opaque origin)
 * loaded from /api/smtpwire/message/{ID}/html, which the server sends with a CSP.
 * ES modules, no build step, no external library.
 */

import { probeSession, renderMessage, selectTab, view } from "./message.js";
import {
  $, API, OWN_API, clear, el, formatAddress, formatAddresses, formatListDate,
  getJSON, messageUrl, reportError, request, shortSender, toast,
} from "./util.js";

const PAGE_SIZE = 50;
const BASE_TITLE = "smtpwire inbox";

const state = {
  messages: [],        // summaries shown in the list, newest first
  total: 0,            // messages in the store
  unread: 0,           // unread messages in the store
  matched: 0,          // messages matching the list's query (messages_count)
  query: "",           // the active search, "" for the plain list
  selected: null,      // ID of the open message (the message itself: view.message)
  listGeneration: 0,   // drops answers of superseded list requests
  arrivals: [],        // [sequence, summary] announced live, newest last (bounded)
  arrivalSeq: 0,
};

/* ---------- the message list ---------- */

function listUrl(start) {
  const params = new URLSearchParams({ start: String(start), limit: String(PAGE_SIZE) });
  if (state.query) {
    params.set("query", state.query);
    return API + "/search?" + params.toString();
  }
  return API + "/messages?" + params.toString();
}

async function loadList(append) {
  const generation = ++state.listGeneration;
  const start = append ? state.messages.length : 0;
  const arrivalMark = state.arrivalSeq;
  let data;
  try {
    data = await getJSON(listUrl(start));
  } catch (error) {
    if (generation === state.listGeneration) {
      $("list-summary").textContent = state.query ? "Search failed" : "Could not load messages";
      reportError(error);
    }
    return;
  }
  if (generation !== state.listGeneration) return;
  const incoming = Array.isArray(data.messages) ? data.messages : [];
  if (append) {
    const known = new Set(state.messages.map((m) => m.ID));
    state.messages = state.messages.concat(incoming.filter((m) => !known.has(m.ID)));
  } else {
    // A message announced while this request was under way may be missing from
    // its answer: keep it (the plain list only; a search is re-run instead).
    const known = new Set(incoming.map((m) => m.ID));
    const missed = state.query ? [] : state.arrivals
      .filter(([seq, m]) => seq > arrivalMark && !known.has(m.ID)).map(([, m]) => m);
    state.messages = missed.reverse().concat(incoming);
  }
  state.total = Number(data.total) || 0;
  state.unread = Number(data.unread) || 0;
  state.matched = Number(data.messages_count ?? data.total) || 0;
  renderList();
}

function rowFor(summary) {
  const attachments = Number(summary.Attachments) || 0;
  const li = el("li", {
    className: "message-row" + (summary.Read ? "" : " unread"),
    dataset: { id: summary.ID },
    tabindex: "0",
    role: "button",
    "aria-label": (summary.Read ? "" : "Unread: ") + (summary.Subject || "(no subject)"),
  }, [
    el("div", { className: "row-top" }, [
      el("span", { className: "row-dot", "aria-hidden": "true" }),
      el("span", { className: "row-from", text: shortSender(summary.From), title: formatAddress(summary.From) }),
      attachments ? clipIcon(attachments) : null,
      el("time", { className: "row-date", text: formatListDate(summary.Created), datetime: summary.Created || "" }),
    ]),
    el("div", { className: "row-subject", text: summary.Subject || "(no subject)" }),
    el("div", { className: "row-to", text: "To: " + (formatAddresses(summary.To) || "(none)") }),
    summary.Snippet ? el("div", { className: "row-snippet", text: summary.Snippet }) : null,
    (summary.Tags && summary.Tags.length)
      ? el("div", { className: "row-tags" }, summary.Tags.map((tag) => el("span", { className: "tag", text: tag })))
      : null,
  ]);
  if (summary.ID === state.selected) li.classList.add("selected");
  return li;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function clipIcon(count) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "row-clip");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", "M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.6-8.6a3.7 3.7 0 0 1 5.2 5.2l-8.6 8.6a1.8 1.8 0 0 1-2.6-2.6l7.9-7.9");
  svg.append(path);
  return el("span", { className: "row-clip-wrap", title: count + (count === 1 ? " attachment" : " attachments") }, [svg]);
}

function renderList() {
  const list = $("message-list");
  clear(list);
  for (const summary of state.messages) list.append(rowFor(summary));
  renderCounts();
}

function renderCounts() {
  const shown = state.messages.length;
  let summary;
  if (state.query) {
    summary = state.matched + (state.matched === 1 ? " match" : " matches");
  } else {
    summary = state.total + (state.total === 1 ? " message" : " messages");
    if (state.unread) summary += ", " + state.unread + " unread";
  }
  $("list-summary").textContent = summary;
  $("list-empty").hidden = shown > 0;
  $("list-empty").textContent = state.query
    ? "No messages match this search."
    : "No messages yet. Send one over SMTP and it appears here.";
  $("load-more").hidden = shown >= state.matched;
  document.title = (state.unread ? "(" + state.unread + ") " : "") + BASE_TITLE;
}

function findRow(id) {
  for (const row of $("message-list").children) {
    if (row.dataset.id === id) return row;
  }
  return null;
}

function setRowRead(id, read) {
  const summary = state.messages.find((m) => m.ID === id);
  if (summary && Boolean(summary.Read) !== read) {
    summary.Read = read;
    state.unread = Math.max(0, state.unread + (read ? -1 : 1));
  }
  const row = findRow(id);
  if (row) row.classList.toggle("unread", !read);
  renderCounts();
}

/* ---------- live updates ---------- */

let events = null;
let researchTimer = null;

function setLive(stateName, text) {
  $("live-status").dataset.state = stateName;
  $("live-text").textContent = text;
}

function connectEvents() {
  if (!("EventSource" in window)) {
    setLive("off", "no live updates");
    return;
  }
  let dropped = false;
  events = new EventSource(OWN_API + "/events");
  events.addEventListener("open", () => {
    setLive("on", "live");
    if (dropped) {
      dropped = false;
      loadList(false);  // catch up on anything that arrived while disconnected
    }
  });
  events.addEventListener("error", () => {
    dropped = true;
    setLive(events.readyState === EventSource.CLOSED ? "off" : "connecting",
      events.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
  });
  events.addEventListener("new", (event) => onNewMessage(event.data));
  events.addEventListener("deleted", (event) => onDeleted(event.data));
  events.addEventListener("read", (event) => onReadChange(event.data, true));
  events.addEventListener("unread", (event) => onReadChange(event.data, false));
}

function parseEventData(data) {
  if (data === undefined || data === null || data === "") return null;
  try {
    return JSON.parse(data);
  } catch (_error) {
    return data;  // a bare ID
  }
}

/* "deleted" may carry {"IDs": [...]}, {"ID": ...}, a list, a bare ID, or nothing (all). */
function idsOf(payload) {
  if (payload === null || payload === undefined) return null;
  if (typeof payload === "string") return [payload];
  if (Array.isArray(payload)) return payload.map(String);
  if (Array.isArray(payload.IDs)) return payload.IDs.map(String);
  if (payload.ID) return [String(payload.ID)];
  return null;
}

function onNewMessage(data) {
  const summary = parseEventData(data);
  if (!summary || typeof summary !== "object" || !summary.ID) {
    loadList(false);
    return;
  }
  if (state.messages.some((m) => m.ID === summary.ID)) return;
  state.arrivals.push([++state.arrivalSeq, summary]);
  if (state.arrivals.length > 200) state.arrivals.splice(0, 100);
  state.total += 1;
  if (!summary.Read) state.unread += 1;
  if (state.query) {
    // Only the server can evaluate a mailpit query: re-run it, coalescing bursts.
    clearTimeout(researchTimer);
    researchTimer = setTimeout(() => loadList(false), 300);
    renderCounts();
    return;
  }
  state.messages.unshift(summary);
  state.matched += 1;
  const row = rowFor(summary);
  row.classList.add("arrived");
  $("message-list").prepend(row);
  renderCounts();
}

function onDeleted(data) {
  const ids = idsOf(parseEventData(data));
  if (ids === null) {
    state.messages = [];
    if (state.selected) closeMessage();
    loadList(false);
    return;
  }
  removeFromList(ids);
}

function onReadChange(data, read) {
  const ids = idsOf(parseEventData(data));
  if (ids === null) {
    loadList(false);
    return;
  }
  for (const id of ids) setRowRead(id, read);
}

function removeFromList(ids) {
  const gone = new Set(ids);
  const before = state.messages.length;
  for (const summary of state.messages) {
    if (gone.has(summary.ID) && !summary.Read) state.unread = Math.max(0, state.unread - 1);
  }
  state.messages = state.messages.filter((m) => !gone.has(m.ID));
  state.arrivals = state.arrivals.filter(([, m]) => !gone.has(m.ID));
  const removed = before - state.messages.length;
  state.total = Math.max(0, state.total - removed);
  state.matched = Math.max(0, state.matched - removed);
  for (const id of ids) {
    const row = findRow(id);
    if (row) row.remove();
  }
  if (state.selected && gone.has(state.selected)) closeMessage();
  renderCounts();
}

/* ---------- the message view ---------- */

function closeMessage() {
  state.selected = null;
  view.message = null;
  view.generation += 1;
  $("message-view").hidden = true;
  $("view-placeholder").hidden = false;
  clear($("panel-html"));
  for (const row of $("message-list").querySelectorAll(".selected")) row.classList.remove("selected");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}

async function openMessage(id) {
  const generation = ++view.generation;
  state.selected = id;
  for (const row of $("message-list").children) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  if (location.hash !== "#" + encodeURIComponent(id)) {
    history.replaceState(null, "", "#" + encodeURIComponent(id));
  }
  let message;
  try {
    message = await getJSON(messageUrl(id));
  } catch (error) {
    if (generation !== view.generation) return;
    if (error.status === 404) {
      removeFromList([id]);
      toast("That message is gone.", true);
    } else {
      reportError(error);
    }
    return;
  }
  if (generation !== view.generation) return;
  view.message = message;
  view.loaded = {};
  renderMessage(message);
  const summary = state.messages.find((m) => m.ID === id);
  if (!summary || !summary.Read) markRead([id], true);
  probeSession(id, generation);
}

async function markRead(ids, read) {
  if (!ids.length) return;
  try {
    await request("PUT", API + "/messages", { IDs: ids, Read: read });
    for (const id of ids) setRowRead(id, read);
  } catch (error) {
    reportError(error);
  }
}

/* ---------- deletion ---------- */

async function deleteMessage(id) {
  try {
    await request("DELETE", API + "/messages", { IDs: [id] });
  } catch (error) {
    reportError(error);
    return;
  }
  removeFromList([id]);
  toast("Message deleted.");
}

let deleteAllArmed = null;
function disarmDeleteAll() {
  clearTimeout(deleteAllArmed);
  deleteAllArmed = null;
  $("delete-all").textContent = "Delete all";
  $("delete-all").classList.remove("armed");
}

async function onDeleteAll() {
  if (!deleteAllArmed) {
    // Two clicks: the first arms the button for a few seconds, no modal dialog.
    $("delete-all").textContent = "Click again to delete all";
    $("delete-all").classList.add("armed");
    deleteAllArmed = setTimeout(disarmDeleteAll, 4000);
    return;
  }
  disarmDeleteAll();
  try {
    await request("DELETE", API + "/messages");
  } catch (error) {
    reportError(error);
    return;
  }
  state.messages = [];
  state.total = 0;
  state.unread = 0;
  state.matched = 0;
  closeMessage();
  renderList();
  toast("All messages deleted.");
}

/* ---------- wiring ---------- */

function rowFromEvent(event) {
  const row = event.target.closest(".message-row");
  return row && row.dataset.id ? row : null;
}

function moveSelection(step) {
  const rows = Array.from($("message-list").children);
  if (!rows.length) return;
  let index = rows.findIndex((row) => row.dataset.id === state.selected);
  index = index < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, index + step));
  rows[index].focus();
  openMessage(rows[index].dataset.id);
}

function init() {
  $("message-list").addEventListener("click", (event) => {
    const row = rowFromEvent(event);
    if (row) openMessage(row.dataset.id);
  });
  $("message-list").addEventListener("keydown", (event) => {
    const row = rowFromEvent(event);
    if (row && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openMessage(row.dataset.id);
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "j" || event.key === "ArrowDown") { event.preventDefault(); moveSelection(1); }
    else if (event.key === "k" || event.key === "ArrowUp") { event.preventDefault(); moveSelection(-1); }
    else if (event.key === "/") { event.preventDefault(); $("search-input").focus(); }
    else if (event.key === "Delete" && state.selected) deleteMessage(state.selected);
  });
  $("tabs").addEventListener("click", (event) => {
    const tab = event.target.closest(".tab");
    if (tab) selectTab(tab.dataset.tab);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.query = $("search-input").value.trim();
    $("search-clear").hidden = !state.query;
    loadList(false);
  });
  $("search-clear").addEventListener("click", () => {
    $("search-input").value = "";
    state.query = "";
    $("search-clear").hidden = true;
    loadList(false);
  });
  $("refresh").addEventListener("click", () => loadList(false));
  $("load-more").addEventListener("click", () => loadList(true));
  $("delete-all").addEventListener("click", onDeleteAll);
  $("mark-all-read").addEventListener("click", () => {
    markRead(state.messages.filter((m) => !m.Read).map((m) => m.ID), true);
  });
  $("msg-delete").addEventListener("click", () => {
    if (state.selected) deleteMessage(state.selected);
  });
  $("msg-unread").addEventListener("click", () => {
    if (state.selected) markRead([state.selected], false);
  });

  connectEvents();
  loadList(false).then(() => {
    let wanted = "";
    try {
      wanted = decodeURIComponent(location.hash.slice(1));
    } catch (_malformed) {
      wanted = "";
    }
    if (wanted) openMessage(wanted);
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
