/* smtpwire web inbox: the open message -- its header, the tabs and what they
 * load.  The HTML body is only ever shown in a sandboxed iframe. */

import { renderSession } from "./session.js";
import {
  $, clear, el, formatAddress, formatAddresses, formatFullDate, formatSize,
  getJSON, getText, messageUrl, ownMessageUrl, reportError,
} from "./util.js";

/* The open message and what its tabs have fetched.  `generation` changes with
 * every open or close, so an answer for a message no longer open is dropped. */
export const view = { message: null, tab: "html", loaded: {}, generation: 0 };

function metaRow(label, value) {
  if (!value) return [];
  return [el("dt", { text: label }), el("dd", { text: value })];
}

export function renderMessage(message) {
  $("view-placeholder").hidden = true;
  $("message-view").hidden = false;
  $("msg-subject").textContent = message.Subject || "(no subject)";
  $("msg-download").setAttribute("href", messageUrl(message.ID, "/raw"));
  $("msg-download").setAttribute("download", (message.ID || "message") + ".eml");

  const meta = $("msg-meta");
  clear(meta);
  meta.append(
    ...metaRow("From", formatAddress(message.From) || "(no sender)"),
    ...metaRow("To", formatAddresses(message.To)),
    ...metaRow("Cc", formatAddresses(message.Cc)),
    ...metaRow("Bcc", formatAddresses(message.Bcc)),
    ...metaRow("Reply-To", formatAddresses(message.ReplyTo)),
    ...metaRow("Date", formatFullDate(message.Date)),
    ...metaRow("Size", formatSize(message.Size)),
  );

  $("msg-text").textContent = message.Text || "";
  clear($("msg-headers"));
  $("msg-raw").textContent = "";
  clear($("panel-html"));

  const attachments = (message.Attachments || []).concat(message.Inline || []);
  $("attachment-count").textContent = attachments.length ? String(attachments.length) : "";
  $("tab-attachments").hidden = attachments.length === 0;
  renderAttachments(message, attachments);

  const hasHTML = Boolean(message.HTML);
  $("tab-html").hidden = !hasHTML;
  $("tab-session").hidden = true;
  clear($("session-facts"));
  clear($("session-transcript"));

  let tab = view.tab;
  if ($("tab-" + tab).hidden) tab = hasHTML ? "html" : "text";
  selectTab(tab);
}

function renderAttachments(message, attachments) {
  const list = $("msg-attachments");
  clear(list);
  if (!attachments.length) {
    list.append(el("li", { className: "muted", text: "No attachments." }));
    return;
  }
  for (const part of attachments) {
    const name = part.FileName || "part-" + part.PartID;
    const href = messageUrl(message.ID, "/part/" + encodeURIComponent(part.PartID));
    list.append(el("li", { className: "attachment" }, [
      el("a", {
        className: "attachment-link",
        href,
        download: name,
        dataset: { partId: String(part.PartID) },
        text: name,
      }),
      el("span", { className: "attachment-meta", text: (part.ContentType || "application/octet-stream") + " \u00b7 " + formatSize(part.Size) }),
      part.ContentID ? el("span", { className: "attachment-meta", text: "inline, cid:" + part.ContentID }) : null,
    ]));
  }
}

export function selectTab(name) {
  view.tab = name;
  for (const tab of $("tabs").querySelectorAll(".tab")) {
    const active = tab.dataset.tab === name;
    tab.classList.toggle("active", active);
    tab.setAttribute("aria-selected", active ? "true" : "false");
  }
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = panel.dataset.panel !== name;
  }
  if (view.message) loadTab(name, view.message.ID, view.generation);
}

async function loadTab(name, id, generation) {
  if (view.loaded[name]) return;
  view.loaded[name] = true;
  try {
    if (name === "html") {
      const frame = el("iframe", {
        className: "html-frame",
        id: "html-frame",
        title: "HTML body",
        // No allow-scripts, no allow-same-origin: the mail's HTML runs nothing and
        // reaches nothing of this page.  Links may open in a new window.
        sandbox: "allow-popups allow-popups-to-escape-sandbox",
        referrerpolicy: "no-referrer",
        src: ownMessageUrl(id, "/html"),
      });
      $("panel-html").replaceChildren(frame);
    } else if (name === "headers") {
      const headers = await getJSON(messageUrl(id, "/headers"));
      if (generation !== view.generation) return;
      renderHeaders(headers);
    } else if (name === "raw") {
      const raw = await getText(messageUrl(id, "/raw"));
      if (generation !== view.generation) return;
      $("msg-raw").textContent = raw;
    }
  } catch (error) {
    view.loaded[name] = false;
    if (generation === view.generation) reportError(error);
  }
}

function renderHeaders(headers) {
  const body = $("msg-headers");
  clear(body);
  const names = Object.keys(headers || {}).sort((a, b) => a.localeCompare(b));
  for (const name of names) {
    const values = Array.isArray(headers[name]) ? headers[name] : [headers[name]];
    for (const value of values) {
      body.append(el("tr", null, [el("th", { text: name }), el("td", { text: value })]));
    }
  }
}

export async function probeSession(id, generation) {
  let session;
  try {
    session = await getJSON(ownMessageUrl(id, "/session"));
  } catch (_error) {
    return;  // not recorded for this message (or not offered): the tab stays hidden
  }
  if (generation !== view.generation || !session || typeof session !== "object") return;
  renderSession(session);
  $("tab-session").hidden = false;
}
