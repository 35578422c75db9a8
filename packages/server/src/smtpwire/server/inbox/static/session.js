/* smtpwire web inbox: the SMTP session tab -- the facts of the session that
 * delivered a message and its transcript, from /api/smtpwire/message/{ID}/session.
 * The shape is read loosely: facts are whatever the object holds besides the
 * transcript, and a transcript line is "C: ..." / "S: ..." or an object. */

import { $, clear, el, formatAddress } from "./util.js";

function describe(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.map(describe).filter(Boolean).join(", ");
  if (typeof value === "object") {
    if ("Address" in value || "Name" in value) return formatAddress(value);
    return Object.entries(value)
      .map(([key, item]) => [key, describe(item)])
      .filter(([, text]) => text !== "")
      .map(([key, text]) => humanLabel(key) + ": " + text)
      .join(" \u00b7 ");
  }
  return String(value);
}

function describeFact(key, value) {
  // A peer is [host, port]: shown as host:port.
  if (/^peer$/i.test(key) && Array.isArray(value) && value.length === 2) {
    return String(value[0]).includes(":") ? "[" + value[0] + "]:" + value[1] : value[0] + ":" + value[1];
  }
  // A switch with details ({"On": true, "Version": ..., "Cipher": ...}): "no", or "yes · details".
  if (value && typeof value === "object" && !Array.isArray(value) && typeof value.On === "boolean") {
    if (!value.On) return "no";
    const details = Object.entries(value)
      .filter(([name]) => name !== "On")
      .map(([, item]) => describe(item))
      .filter(Boolean);
    return ["yes", ...details].join(" \u00b7 ");
  }
  return describe(value);
}

function humanLabel(key) {
  return key.replace(/_/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2");
}

const TRANSCRIPT_KEYS = ["Transcript", "transcript", "Lines", "lines"];

export function renderSession(session) {
  const facts = $("session-facts");
  const transcript = $("session-transcript");
  clear(facts);
  clear(transcript);
  const source = session.Session && typeof session.Session === "object" ? session.Session : session;
  for (const [key, value] of Object.entries(source)) {
    if (TRANSCRIPT_KEYS.includes(key) || key === "ID") continue;
    const text = describeFact(key, value);
    if (text === "") continue;
    facts.append(el("dt", { text: humanLabel(key) }), el("dd", { text }));
  }
  let lines = [];
  for (const key of TRANSCRIPT_KEYS) {
    if (Array.isArray(session[key])) { lines = session[key]; break; }
    if (Array.isArray(source[key])) { lines = source[key]; break; }
  }
  for (const line of lines) transcript.append(transcriptLine(line));
  if (!lines.length) transcript.append(el("li", { className: "muted", text: "No transcript recorded." }));
}

/* A line is a string ("C: EHLO x" / "S: 250 ok") or an object with a direction and text. */
function transcriptLine(line) {
  let direction = "";
  let text;
  let time = "";
  if (typeof line === "string") {
    const match = /^([CS<>])[:\s]\s?(.*)$/s.exec(line);
    if (match) {
      direction = match[1] === "C" || match[1] === ">" ? "client" : "server";
      text = match[2];
    } else {
      text = line;
    }
  } else if (line && typeof line === "object") {
    const dir = String(line.Direction ?? line.direction ?? line.From ?? line.from ?? line.Side ?? line.side ?? "").toLowerCase();
    if (dir.startsWith("c") || dir === ">" || dir === "in" || dir === "recv") direction = "client";
    else if (dir.startsWith("s") || dir === "<" || dir === "out" || dir === "send") direction = "server";
    text = describe(line.Line ?? line.line ?? line.Text ?? line.text ?? line.Data ?? line.data ?? line);
    time = describe(line.Time ?? line.time ?? line.At ?? line.at ?? "");
  } else {
    text = describe(line);
  }
  text = String(text).replace(/\r\n/g, "\n").replace(/\s+$/, "");
  return el("li", { className: "line" + (direction ? " line-" + direction : "") }, [
    el("span", { className: "line-dir", text: direction === "client" ? "C" : direction === "server" ? "S" : "\u00b7" }),
    el("span", { className: "line-text", text }),
    time ? el("span", { className: "line-time", text: time }) : null,
  ]);
}
