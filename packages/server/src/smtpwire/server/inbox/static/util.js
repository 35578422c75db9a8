/* smtpwire web inbox: what every part of the page uses -- building DOM nodes
 * without ever parsing HTML, formatting, and talking to the API. */

export const API = "/api/v1";
export const OWN_API = "/api/smtpwire";

export const $ = (id) => document.getElementById(id);

/* ---------- small DOM helpers (no HTML parsing anywhere) ---------- */

export function el(tag, props, children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children || []) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
}

export function messageUrl(id, suffix) {
  return API + "/message/" + encodeURIComponent(id) + (suffix || "");
}

export function ownMessageUrl(id, suffix) {
  return OWN_API + "/message/" + encodeURIComponent(id) + suffix;
}

/* ---------- formatting ---------- */

export function formatAddress(address) {
  if (!address) return "";
  const name = address.Name || "";
  const mail = address.Address || "";
  if (name && mail) return name + " <" + mail + ">";
  return name || mail;
}

export function formatAddresses(list) {
  return (list || []).map(formatAddress).filter(Boolean).join(", ");
}

export function shortSender(address) {
  if (!address) return "(no sender)";
  return address.Name || address.Address || "(no sender)";
}

export function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + " kB";
  return (n / (1024 * 1024)).toFixed(1) + " MB";
}

export function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function formatListDate(value) {
  const date = parseDate(value);
  if (!date) return "";
  const now = new Date();
  if (date.toDateString() === now.toDateString()) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  return date.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

export function formatFullDate(value) {
  const date = parseDate(value);
  return date ? date.toLocaleString() : String(value || "");
}

/* ---------- HTTP ---------- */

export async function request(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) {
    let reason = "HTTP " + response.status;
    try {
      const text = await response.text();
      try {
        reason = JSON.parse(text).Error || text || reason;
      } catch (_notJSON) {
        reason = text.trim() || reason;
      }
    } catch (_unreadable) {
      // keep the status
    }
    const error = new Error(String(reason).slice(0, 300));
    error.status = response.status;
    throw error;
  }
  return response;
}

export async function getJSON(url) {
  return (await request("GET", url)).json();
}

export async function getText(url) {
  return (await request("GET", url)).text();
}

let toastTimer = null;
export function toast(text, isError) {
  const node = $("toast");
  node.textContent = text;
  node.classList.toggle("toast-error", Boolean(isError));
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 4000);
}

export function reportError(error) {
  console.error(error);
  toast(error && error.message ? error.message : String(error), true);
}
