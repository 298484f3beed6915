// The tenants' page of the cigate gateway: list, preview, download and erase stored files.
//
// Rules this file keeps (docs/web.md, "Security"):
// * the key lives in sessionStorage and leaves only as `Authorization: Bearer` on fetch() to
//   this gateway (credentials: "omit": no cookie is ever sent or needed);
// * every string that comes from a file (name, id, path, type, error) reaches the page through
//   text nodes (el() below), never as markup: no DOM call in this file parses HTML;
// * previews: raster images whose first bytes match their type, shown from a blob: URL made
//   with that fixed type; CSV/TSV/JSON as text cells. SVG, HTML and everything else: no preview.

const KEY = "cigate.gateway.key";
const PAGE = 20;
const IMAGE_PREVIEW_MAX = 8 * 1024 * 1024;
const TEXT_PREVIEW_BYTES = 65536;
const BASE = new URL(".", document.baseURI);

const $ = (id) => document.getElementById(id);
let cursor = null; // id of the last file shown: the next page starts after it
let objectUrls = [];
let shown = 0; // bumped when the previews are forgotten: late answers are dropped

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** An element with text children only: strings become text nodes, never markup. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "className" || name === "title" || name === "type" || name === "alt") {
      node[name] = value;
    } else if (name === "hidden" || name === "disabled") {
      node[name] = Boolean(value);
    } else {
      throw new Error(`el(): property ${name} not allowed`);
    }
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let trying = null; // a key being tried at sign-in, kept only once the gateway accepted it

function storedKey() {
  return trying ?? sessionStorage.getItem(KEY);
}

async function api(path, { method = "GET", headers = {}, key = storedKey() } = {}) {
  const sent = new Headers(headers);
  if (key) sent.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(new URL(path, BASE), {
      method,
      headers: sent,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError("The gateway cannot be reached (network error). Check the connection and try again.", 0);
  }
  if (!response.ok) throw await apiError(response);
  return response;
}

async function apiError(response) {
  let message = "";
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") message = body.error.message;
  } catch {
    // not JSON: the status says enough
  }
  if (response.status === 401) {
    return new ApiError("The gateway did not accept this key. Check it and sign in again.", 401);
  }
  if (response.status === 429) {
    const wait = response.headers.get("retry-after");
    const when = wait && /^\d{1,6}$/.test(wait) ? ` Try again in ${wait} s.` : " Try again shortly.";
    return new ApiError(`Too many requests: the gateway asks to slow down.${when}`, 429);
  }
  return new ApiError(message || `The gateway answered ${response.status}.`, response.status);
}

function showStatus(message, kind = "error") {
  const status = $("status");
  status.textContent = message;
  status.className = kind === "error" ? "status" : "status info";
  status.hidden = !message;
}

function forgetPreviews() {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  shown += 1;
}

// -- formatting ---------------------------------------------------------------------------

function size(bytes) {
  if (typeof bytes !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function created(seconds) {
  if (typeof seconds !== "number") return "–";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
}

const HOW = {
  citation: "cited in the answer",
  listing: "found in the container",
  assistants: "cited by a message",
  on_demand: "fetched on request",
};

function originLines(file) {
  const lines = [];
  if (file.origin === "assistants" && file.response_id) lines.push(`Assistants run ${file.response_id}`);
  else if (file.response_id) lines.push(`Response ${file.response_id}`);
  if (file.container_id) lines.push(`Container ${file.container_id}`);
  if (file.kind === "files_api") lines.push(`Files API ${file.upstream_file_id}`);
  if (HOW[file.origin]) lines.push(`(${HOW[file.origin]})`);
  return lines;
}

/** A name as it is shown: controls, format characters (bidi overrides, zero-width) and line
 * separators become a visible [U+XXXX], so "\u202Egnp.exe" cannot pass for "exe.png". */
function visible(name) {
  return String(name).replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) =>
    `[U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`,
  );
}

function basename(name) {
  const parts = String(name).split(/[/\\]/);
  return parts[parts.length - 1] || "download";
}

function mediaType(value) {
  return String(value || "").split(";")[0].trim().toLowerCase();
}

// -- previews -----------------------------------------------------------------------------

/** Raster types shown inline, each with the first bytes a real file of that type has. */
const IMAGES = {
  "image/png": (b) => starts(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  "image/jpeg": (b) => starts(b, [0xff, 0xd8, 0xff]),
  "image/gif": (b) => starts(b, [0x47, 0x49, 0x46, 0x38, 0x37, 0x61]) || starts(b, [0x47, 0x49, 0x46, 0x38, 0x39, 0x61]),
  "image/webp": (b) => starts(b, [0x52, 0x49, 0x46, 0x46]) && starts(b.subarray(8), [0x57, 0x45, 0x42, 0x50]),
  "image/bmp": (b) => starts(b, [0x42, 0x4d]),
};

function starts(bytes, magic) {
  return bytes.length >= magic.length && magic.every((value, i) => bytes[i] === value);
}

function previewKind(type, name) {
  const lower = String(name).toLowerCase();
  if (Object.hasOwn(IMAGES, type)) return "image";
  if (type === "text/csv" || type === "text/tab-separated-values") return "table";
  if ((lower.endsWith(".csv") || lower.endsWith(".tsv")) && (type.startsWith("text/") || type === "application/octet-stream")) {
    return "table";
  }
  if (type === "application/json") return "json";
  return null;
}

/** Fill `cell` with a preview of the bytes `fetchBytes(range)` returns, when the type has one. */
async function preview(cell, { type, name, bytes }, fetchBytes) {
  const kind = previewKind(type, name);
  const generation = shown;
  if (kind === null) {
    cell.replaceChildren(el("span", { className: "none" }, "no preview"));
    return;
  }
  try {
    if (kind === "image") {
      if (typeof bytes === "number" && bytes > IMAGE_PREVIEW_MAX) {
        cell.replaceChildren(el("span", { className: "none" }, "too large to preview"));
        return;
      }
      const data = new Uint8Array(await fetchBytes(null));
      if (generation !== shown) return; // signed out (or reloaded) meanwhile
      if (!IMAGES[type](data)) {
        cell.replaceChildren(el("span", { className: "none" }, `no preview: not a ${type} file`));
        return;
      }
      const url = URL.createObjectURL(new Blob([data], { type }));
      objectUrls.push(url);
      const img = el("img", { alt: `Preview of ${visible(name)}` });
      img.src = url;
      cell.replaceChildren(img);
      return;
    }
    const data = new Uint8Array(await fetchBytes(TEXT_PREVIEW_BYTES));
    const whole = typeof bytes === "number" && data.length >= bytes;
    const text = new TextDecoder("utf-8").decode(data.subarray(0, TEXT_PREVIEW_BYTES));
    if (text.includes("\u0000")) {
      cell.replaceChildren(el("span", { className: "none" }, "no preview: binary content"));
      return;
    }
    if (kind === "json") {
      let shown = text;
      if (whole) {
        try {
          shown = JSON.stringify(JSON.parse(text), null, 2);
        } catch {
          // not valid JSON: shown as it is
        }
      }
      cell.replaceChildren(el("pre", {}, shown.slice(0, 2000)));
      return;
    }
    const separator = type === "text/tab-separated-values" || String(name).toLowerCase().endsWith(".tsv") ? "\t" : ",";
    cell.replaceChildren(tableOf(parseDelimited(text, separator, 6)));
  } catch (error) {
    cell.replaceChildren(el("span", { className: "none" }, `preview failed: ${error.message}`));
  }
}

/** The first `most` records of CSV/TSV text (RFC 4180 quotes), at most 8 cells each. */
function parseDelimited(text, separator, most) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length && rows.length < most; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') {
        quoted = false;
      } else {
        cell += c;
      }
    } else if (c === '"' && cell === "") {
      quoted = true;
    } else if (c === separator) {
      row.push(cell);
      cell = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else {
      cell += c;
    }
  }
  if (rows.length < most && (cell !== "" || row.length)) rows.push([...row, cell]);
  return rows.map((r) => r.slice(0, 8));
}

function tableOf(rows) {
  const body = el("tbody");
  for (const cells of rows) {
    body.append(el("tr", {}, ...cells.map((text) => el("td", { title: text }, text.slice(0, 80)))));
  }
  return el("table", {}, body);
}

// -- downloads ----------------------------------------------------------------------------

/** Save `response`'s bytes under `name`; the blob is typed octet-stream: never rendered. */
async function save(response, name) {
  const blob = new Blob([await response.arrayBuffer()], { type: "application/octet-stream" });
  const url = URL.createObjectURL(blob);
  const link = el("a");
  link.href = url;
  link.download = basename(name);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function busy(button, work) {
  button.disabled = true;
  showStatus("");
  try {
    await work();
  } catch (error) {
    showStatus(error.message);
    if (error.status === 401) signOut(error.message);
  } finally {
    button.disabled = false;
  }
}

// -- the list -----------------------------------------------------------------------------

function contentPath(file) {
  return `files/${encodeURIComponent(file.id)}/content`;
}

function fileRow(file) {
  const previewCell = el("td", { className: "preview" }, el("span", { className: "none" }, "…"));
  const state = el("td", { className: `state-${file.state}` }, file.state);
  if (file.state === "failed" && file.error) {
    state.append(el("span", { className: "error" }, visible(`${file.error.kind}: ${file.error.message}`)));
  }
  const name = visible(file.filename);
  const download = el("button", { type: "button", title: `Download ${name}` }, "Download");
  const erase = el("button", { type: "button", className: "danger", title: `Erase ${name}` }, "Erase");
  const cancel = el("button", { type: "button", hidden: true }, "Cancel");
  const row = el(
    "tr",
    {},
    previewCell,
    el("td", { className: "name" }, name),
    el("td", { className: "num" }, size(file.bytes)),
    el("td", {}, file.content_type || "–"),
    el("td", { className: "num" }, created(file.created_at)),
    el("td", { className: "origin" }, ...originLines(file).map((line) => el("span", {}, line))),
    state,
    el("td", { className: "actions" }, download, erase, cancel),
  );
  row.dataset.id = file.id;
  download.disabled = file.state !== "stored";
  download.addEventListener("click", () =>
    busy(download, async () => save(await api(contentPath(file)), file.filename)),
  );
  erase.addEventListener("click", () => {
    if (!erase.classList.contains("confirm")) {
      erase.classList.add("confirm");
      erase.textContent = "Erase for good";
      cancel.hidden = false;
      return;
    }
    busy(erase, async () => {
      await api(`files/${encodeURIComponent(file.id)}`, { method: "DELETE" });
      row.remove();
      showStatus(`Erased ${name}.`, "info");
      afterChange();
    });
  });
  cancel.addEventListener("click", () => {
    erase.classList.remove("confirm");
    erase.textContent = "Erase";
    cancel.hidden = true;
  });
  if (file.state === "stored") {
    const meta = { type: mediaType(file.content_type), name: file.filename, bytes: file.bytes };
    preview(previewCell, meta, async (range) => {
      const headers = range ? { Range: `bytes=0-${range - 1}` } : {};
      return (await api(contentPath(file), { headers })).arrayBuffer();
    });
  } else {
    previewCell.replaceChildren(el("span", { className: "none" }, "not stored yet"));
  }
  return row;
}

function afterChange() {
  const rows = $("rows").children;
  cursor = rows.length ? rows[rows.length - 1].dataset.id : null;
  $("table").hidden = rows.length === 0;
  $("empty").hidden = rows.length !== 0 || !$("more").hidden;
  if (rows.length === 0 && !$("more").hidden) loadFirst();
}

async function loadPage(key) {
  const query = new URLSearchParams({ limit: String(PAGE), order: "desc" });
  if (cursor) query.set("after", cursor);
  const page = await (await api(`files?${query}`, { key })).json();
  for (const file of page.data) $("rows").append(fileRow(file));
  $("more").hidden = !page.has_more;
  afterChange();
}

async function loadFirst() {
  forgetPreviews();
  $("rows").replaceChildren();
  cursor = null;
  try {
    await loadPage(storedKey());
  } catch (error) {
    if (error.status === 401) signOut(error.message);
    else showStatus(error.message);
  }
}

function showList(key) {
  $("signin").hidden = true;
  $("files").hidden = false;
  $("signout").hidden = false;
  $("who").hidden = false;
  $("who").textContent = `Signed in with key ${key.slice(0, 8)}…`;
}

function signOut(message = "", kind = "error") {
  sessionStorage.removeItem(KEY);
  forgetPreviews();
  cursor = null;
  $("rows").replaceChildren();
  document.querySelector(".single")?.remove();
  $("files").hidden = true;
  $("signout").hidden = true;
  $("signout").textContent = "Sign out";
  $("who").hidden = true;
  $("who").textContent = "";
  $("key").value = "";
  $("signin").hidden = false;
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  showStatus(message, kind);
}

// -- a signed link (no key) ---------------------------------------------------------------

/** The gateway URL of a signed link given as a full URL or a path; null if it is not one. */
function linkUrl(given) {
  let url;
  try {
    url = new URL(given.trim(), BASE);
  } catch {
    return null;
  }
  const path = url.pathname.slice(BASE.pathname.length);
  if (url.origin !== BASE.origin || !url.pathname.startsWith(BASE.pathname)) return null;
  if (!/^links\/[A-Za-z0-9_-]{1,128}$/.test(path)) return null;
  return url;
}

function dispositionName(header) {
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header || "");
  if (star) {
    try {
      return decodeURIComponent(star[1]);
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename="([^"]*)"/i.exec(header || "");
  return plain ? plain[1] : "download";
}

async function showLink(url) {
  $("signin").hidden = true;
  $("files").hidden = true;
  $("signout").hidden = false;
  $("signout").textContent = "Close";
  const target = `${url.pathname}${url.search}`;
  const head = await api(target, { method: "HEAD", key: null });
  const name = dispositionName(head.headers.get("content-disposition"));
  const type = mediaType(head.headers.get("content-type"));
  const bytes = Number(head.headers.get("content-length"));
  const previewBox = el("div", { className: "preview" });
  const download = el("button", { type: "button" }, "Download");
  download.addEventListener("click", () => busy(download, async () => save(await api(target, { key: null }), name)));
  const box = el(
    "section",
    { className: "single" },
    el("h2", {}, visible(name)),
    el("dl", {}, el("dt", {}, "Size"), el("dd", {}, size(bytes)), el("dt", {}, "Type"), el("dd", {}, type || "–")),
    previewBox,
    el("div", {}, download),
  );
  document.querySelector("main").append(box);
  preview(previewBox, { type, name, bytes }, async (range) => {
    const headers = range ? { Range: `bytes=0-${range - 1}` } : {};
    return (await api(target, { headers, key: null })).arrayBuffer();
  });
}

// -- start --------------------------------------------------------------------------------

async function signIn(given) {
  const link = given.includes("/links/") ? linkUrl(given) : null;
  if (link) {
    history.replaceState(null, "", `#link=${encodeURIComponent(link.pathname.slice(BASE.pathname.length) + link.search)}`);
    await openLink(link);
    return;
  }
  const key = given.trim();
  if (!/^[\x21-\x7e]{1,512}$/.test(key)) {
    showStatus("That is not a gateway key (cgk_…) or a signed link of this gateway.");
    return;
  }
  cursor = null;
  forgetPreviews();
  $("rows").replaceChildren();
  trying = key;
  try {
    await loadPage(key);
  } catch (error) {
    $("rows").replaceChildren();
    showStatus(error.message);
    return;
  } finally {
    trying = null;
  }
  sessionStorage.setItem(KEY, key);
  showStatus("");
  showList(key);
}

async function openLink(url) {
  try {
    await showLink(url);
    showStatus("");
  } catch (error) {
    showStatus(error.status === 403 ? "This download link is invalid, expired or revoked." : error.message);
  }
}

function start() {
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value);
  });
  $("signout").addEventListener("click", () => signOut("Signed out.", "info"));
  $("more").addEventListener("click", () =>
    busy($("more"), () => loadPage(storedKey())),
  );
  window.addEventListener("hashchange", () => location.reload()); // a new #link= typed in
  const hash = location.hash.startsWith("#link=") ? decodeURIComponent(location.hash.slice(6)) : null;
  const link = hash !== null ? linkUrl(hash) : null;
  const key = storedKey();
  if (link) {
    openLink(link);
  } else if (key) {
    showList(key);
    loadFirst();
  } else {
    $("signin").hidden = false;
    if (hash !== null) showStatus("This is not a download link of this gateway.");
  }
}

start();
