// hfmed view: the page. Plain JavaScript, no library, nothing fetched but this server's API.
// State lives in the URL's hash (config, split, offset, label filter, selected row, axis, slice),
// so a view can be bookmarked, reloaded, or opened by `hfmed view --config`.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, split: null, offset: 0, label: "", row: null, axis: 0, slice: null };
let info = null;      // /api/config of the current config
let folder = "";
let volume = null;    // {key, shape, data: Uint8Array}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, params) {
  const url = path + "?" + new URLSearchParams(params).toString();
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  state.config = p.get("config");
  state.split = p.get("split");
  state.offset = Math.max(0, parseInt(p.get("offset") || "0", 10) || 0);
  state.label = p.get("label") || "";
  state.row = p.has("row") ? parseInt(p.get("row"), 10) : null;
  state.axis = parseInt(p.get("axis") || "0", 10) || 0;
  state.slice = p.has("slice") ? parseInt(p.get("slice"), 10) : null;
}

function writeHash() {
  const p = new URLSearchParams();
  for (const k of ["config", "split", "offset", "label", "row", "axis", "slice"]) {
    if (state[k] !== null && state[k] !== "" && !(k === "offset" && state[k] === 0)) p.set(k, state[k]);
  }
  history.replaceState(null, "", "#" + p.toString());
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// --- Markdown: the subset a dataset card uses (headings, paragraphs, lists, tables, code, quotes) ---

function inline(text) {
  return text.split(/(`[^`]*`)/).map((part) => {
    if (part.startsWith("`") && part.endsWith("`") && part.length > 1) return "<code>" + esc(part.slice(1, -1)) + "</code>";
    let s = esc(part);
    s = s.replace(/!\[([^\]]*)\]\(([^)\s]+)\)/g, (m, alt, src) =>
      /^[a-z]+:|^\/\//i.test(src) ? alt : `<img alt="${alt}" src="/files/${src.replace(/^\.\//, "")}">`);
    s = s.replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (m, label, href) =>
      /^https?:/i.test(href) ? `<a href="${href}" target="_blank" rel="noopener">${label}</a>` : label);  // the card's own #anchors are not on this page
    s = s.replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>").replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>");
    return s;
  }).join("");
}

function tableHtml(lines) {
  const cells = (line) => line.trim().replace(/^\|/, "").replace(/\|\s*$/, "").split("|").map((c) => c.trim());
  const head = cells(lines[0]);
  const body = lines.slice(2).map(cells);
  return "<table><thead><tr>" + head.map((c) => "<th>" + inline(c) + "</th>").join("") + "</tr></thead><tbody>" +
    body.map((r) => "<tr>" + r.map((c) => "<td>" + inline(c) + "</td>").join("") + "</tr>").join("") + "</tbody></table>";
}

function markdown(text) {
  const lines = text.split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (/^\s*(```|~~~)/.test(line)) {
      const code = [];
      for (i++; i < lines.length && !/^\s*(```|~~~)/.test(lines[i]); i++) code.push(lines[i]);
      out.push("<pre><code>" + esc(code.join("\n")) + "</code></pre>");
      i++;
    } else if ((m = line.match(/^(#{1,6})\s+(.*?)\s*#*\s*$/))) {
      const level = Math.min(6, m[1].length + 1);
      out.push(`<h${level}>${inline(m[2])}</h${level}>`);
      i++;
    } else if (/^\s*\|/.test(line)) {
      const rows = [];
      for (; i < lines.length && /^\s*\|/.test(lines[i]); i++) rows.push(lines[i]);
      out.push(tableHtml(rows));
    } else if (/^\s*>/.test(line)) {
      const quote = [];
      for (; i < lines.length && /^\s*>/.test(lines[i]); i++) quote.push(lines[i].replace(/^\s*>\s?/, ""));
      out.push("<blockquote>" + markdown(quote.join("\n")) + "</blockquote>");
    } else if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
      const items = [];
      for (; i < lines.length && (/^\s*([-*]|\d+\.)\s+/.test(lines[i]) || /^\s{2,}\S/.test(lines[i]) || (lines[i] === "" && /^\s{2,}\S/.test(lines[i + 1] || ""))); i++) {
        if (/^\s*([-*]|\d+\.)\s+/.test(lines[i]) && !/^\s{2,}/.test(lines[i])) items.push([lines[i].replace(/^\s*([-*]|\d+\.)\s+/, "")]);
        else items[items.length - 1].push(lines[i].replace(/^\s{2}/, ""));
      }
      out.push("<ul>" + items.map((it) => "<li>" + (it.length > 1 ? markdown(it.join("\n")) : inline(it[0])) + "</li>").join("") + "</ul>");
    } else if (line.trim() === "") {
      i++;
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() !== "" && !/^(#{1,6}\s|\s*\||\s*>|\s*```|\s*([-*]|\d+\.)\s)/.test(lines[i]); i++) para.push(lines[i]);
      out.push("<p>" + inline(para.join(" ")) + "</p>");
    }
  }
  return out.join("\n");
}

// --- configs, splits and the overview ---

async function loadConfigs() {
  const body = await api("/api/configs", {});
  folder = body.folder;
  $("folder").textContent = folder;
  const select = $("config");
  select.innerHTML = body.configs.map((c) => `<option value="${esc(c.name)}">${esc(c.name)}${c.default ? " (default)" : ""}</option>`).join("");
  const names = body.configs.map((c) => c.name);
  if (!names.includes(state.config)) state.config = (body.configs.find((c) => c.default) || body.configs[0]).name;
  select.value = state.config;
}

function splitButtons() {
  $("splits").innerHTML = info.splits.map((s) =>
    `<button type="button" role="tab" data-split="${esc(s.name)}" aria-selected="${s.name === state.split}">${esc(s.name)} <span class="muted">${s.rows.toLocaleString("en")}</span></button>`).join("");
}

const splitClass = (s) => (["train", "validation", "test"].includes(s) ? s : "other");

function chartHtml() {
  const splits = info.splits.map((s) => s.name);
  const legend = '<div class="legend">' + splits.map((s) => `<span><i class="${splitClass(s)}"></i>${esc(s)}</span>`).join("") + "</div>";
  return Object.entries(info.labels).map(([column, perSplit]) => {
    const col = info.columns.find((c) => c.name === column);
    const max = Math.max(1, ...splits.flatMap((s) => perSplit[s].counts));
    const rows = col.names.map((name, k) => `<div class="cls"><span class="name" title="${esc(name)}">${esc(name)}</span><span class="bars">` +
      splits.map((s) => { const n = perSplit[s].counts[k]; return `<div><span class="bar ${splitClass(s)}" style="width:${(180 * n / max).toFixed(1)}px"></span>${n.toLocaleString("en")}</div>`; }).join("") +
      "</span></div>").join("");
    const empty = col.kind === "label_list" ? `<div class="muted">rows with no label: ${splits.map((s) => `${esc(s)} ${perSplit[s].empty}`).join(", ")}</div>` : "";
    return `<div class="chart"><h3>${esc(column)}: rows per class</h3>${legend}${rows}${empty}</div>`;
  }).join("");
}

function filterOptions() {
  let html = '<option value="">all rows</option>';
  for (const col of info.columns) {
    if (col.kind !== "class_label" && col.kind !== "label_list") continue;
    const counts = info.labels[col.name][state.split];
    html += `<optgroup label="${esc(col.name)}">` + col.names.map((name, k) =>
      `<option value="${esc(col.name)}:${k}">${esc(col.name)} = ${esc(name)} (${counts.counts[k]})</option>`).join("");
    if (col.kind === "label_list") html += `<option value="${esc(col.name)}:-1">${esc(col.name)} empty (${counts.empty})</option>`;
    html += "</optgroup>";
  }
  $("filter").innerHTML = html;
  $("filter").value = state.label;
}

async function loadConfig() {
  info = null;
  for (const id of ["overview", "controls", "volume", "rows"]) $(id).hidden = true;
  $("splits").innerHTML = "";
  try {
    info = await api("/api/config", { config: state.config });
  } catch (e) {
    showError(`${state.config}: ${e.message}`);
    return;
  }
  showError("");
  if (!info.splits.some((s) => s.name === state.split)) state.split = info.splits[0].name;
  splitButtons();
  const total = info.splits.reduce((a, s) => a + s.rows, 0);
  $("summary").innerHTML = `<strong>${esc(info.name)}</strong>: ${total.toLocaleString("en")} rows (` +
    info.splits.map((s) => `${esc(s.name)} ${s.rows.toLocaleString("en")}`).join(", ") + ")";
  $("chart").innerHTML = chartHtml();
  $("card").innerHTML = markdown(info.card);
  $("overview").hidden = false;
  filterOptions();
  await loadRows();
}

// --- rows ---

function cellHtml(col, value, rowIdx) {
  if (value === null || value === undefined) return '<span class="muted">null</span>';
  switch (col.kind) {
    case "image": return `<img class="thumb" alt="${esc(col.name)} of row ${rowIdx}" src="${value.src}">`;
    case "class_label": return `<span class="label">${esc(value.name ?? "no label")}<span class="id">${value.id}</span></span>`;
    case "label_list": return value.length ? value.map((v) => `<span class="label">${esc(v.name ?? v.id)}</span>`).join("") : '<span class="muted">[]</span>';
    case "array3d": return `<button type="button" class="vol" data-row="${rowIdx}" data-column="${esc(col.name)}">${value.shape.join("×")} · look inside</button>`;
    default: return esc(value);
  }
}

function typeName(col) {
  return { image: "image", class_label: `ClassLabel (${col.names.length})`, label_list: `list of ClassLabel (${col.names.length})`,
           array3d: `Array3D ${col.shape.join("×")} ${col.dtype}`, value: col.dtype }[col.kind];
}

function loadLine(total) {
  const end = Math.min(state.offset + info.page_rows, total);
  const head = `load_dataset(${JSON.stringify(folder)}, ${JSON.stringify(info.name)}`;
  if (!state.label) return `${head}, split="${state.split}[${state.offset}:${end}]")`;
  const [column, id] = [state.label.slice(0, state.label.lastIndexOf(":")), parseInt(state.label.slice(state.label.lastIndexOf(":") + 1), 10)];
  const col = info.columns.find((c) => c.name === column);
  const test = col.kind === "label_list" ? (id < 0 ? `len(row[${JSON.stringify(column)}]) == 0` : `${id} in row[${JSON.stringify(column)}]`) : `row[${JSON.stringify(column)}] == ${id}`;
  return `${head}, split="${state.split}").filter(lambda row: ${test}).select(range(${state.offset}, ${end}))`;
}

async function loadRows() {
  let body;
  try {
    body = await api("/api/rows", { config: state.config, split: state.split, offset: state.offset, length: info.page_rows, label: state.label });
  } catch (e) {
    showError(`${state.config}/${state.split}: ${e.message}`);
    $("rows").hidden = true;
    return;
  }
  if (!body.rows.length && state.offset > 0) {  // an offset past the end (an old bookmark): the first page
    state.offset = 0;
    return loadRows();
  }
  const cols = info.columns;
  $("rows").querySelector("thead").innerHTML = "<tr><th>row</th>" + cols.map((c) => `<th>${esc(c.name)}<span class="type">${esc(typeName(c))}</span></th>`).join("") + "</tr>";
  $("rows").querySelector("tbody").innerHTML = body.rows.map((r) =>
    `<tr data-row="${r.row_idx}"${r.row_idx === state.row ? ' class="selected"' : ""}><td class="idx">${r.row_idx}</td>` +
    cols.map((c) => `<td>${cellHtml(c, r.cells[c.name], r.row_idx)}</td>`).join("") + "</tr>").join("");
  const last = Math.min(state.offset + body.rows.length, body.total);
  $("range").textContent = body.total ? `rows ${state.offset + 1}–${last} of ${body.total.toLocaleString("en")}${state.label ? " matching" : ""}` : "no rows";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + info.page_rows >= body.total;
  $("loadcode").textContent = loadLine(body.total);
  $("controls").hidden = false;
  $("rows").hidden = false;
  writeHash();
  const vol = cols.find((c) => c.kind === "array3d");
  if (vol && body.rows.length) {
    const onPage = body.rows.some((r) => r.row_idx === state.row);
    await showVolume(onPage ? state.row : body.rows[0].row_idx, vol);
  }
}

// --- the slice scrubber ---

async function showVolume(row, col) {
  const key = `${state.config}/${state.split}/${row}/${col.name}`;
  if (!volume || volume.key !== key) {
    const response = await fetch("/api/volume?" + new URLSearchParams({ config: state.config, split: state.split, row, column: col.name }));
    if (!response.ok) { showError((await response.json()).error); return; }
    volume = { key, shape: col.shape, data: new Uint8Array(await response.arrayBuffer()) };
    if (state.row !== row) state.slice = null;
  }
  state.row = row;
  for (const tr of document.querySelectorAll("#rows tr[data-row]")) tr.classList.toggle("selected", parseInt(tr.dataset.row, 10) === row);
  $("volrow").textContent = `row ${row} of ${state.split}, ${col.name} ${col.shape.join("×")}`;
  $("volume").hidden = false;
  document.querySelector(`input[name=axis][value="${state.axis}"]`).checked = true;
  const depth = volume.shape[state.axis];
  if (state.slice === null || state.slice >= depth || state.slice < 0) state.slice = Math.floor(depth / 2);
  $("slice").max = depth - 1;
  $("slice").value = state.slice;
  drawSlice();
}

function drawSlice() {
  const [d, h, w] = volume.shape;
  const axis = state.axis, k = state.slice, v = volume.data;
  const [rows, cols] = axis === 0 ? [h, w] : axis === 1 ? [d, w] : [d, h];
  const canvas = $("canvas");
  canvas.width = cols;
  canvas.height = rows;
  const scale = Math.max(1, Math.floor(280 / Math.max(rows, cols)));
  canvas.style.width = cols * scale + "px";
  canvas.style.height = rows * scale + "px";
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const value = axis === 0 ? v[(k * h + y) * w + x] : axis === 1 ? v[(y * h + k) * w + x] : v[(y * h + x) * w + k];
      const o = 4 * (y * cols + x);
      img.data[o] = img.data[o + 1] = img.data[o + 2] = value;
      img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  $("sliceinfo").textContent = `slice ${k} of ${volume.shape[axis] - 1}`;
  writeHash();
}

// --- events ---

function go(changes) {
  Object.assign(state, changes);
  writeHash();
}

$("config").addEventListener("change", () => { go({ config: $("config").value, offset: 0, label: "", row: null, slice: null }); loadConfig(); });
$("splits").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-split]");
  if (b) { go({ split: b.dataset.split, offset: 0, row: null, slice: null }); splitButtons(); filterOptions(); loadRows(); }
});
$("filter").addEventListener("change", () => { go({ label: $("filter").value, offset: 0, row: null }); loadRows(); });
$("prev").addEventListener("click", () => { go({ offset: Math.max(0, state.offset - info.page_rows) }); loadRows(); });
$("next").addEventListener("click", () => { go({ offset: state.offset + info.page_rows }); loadRows(); });
$("jumpform").addEventListener("submit", (e) => {
  e.preventDefault();
  const total = info.splits.find((s) => s.name === state.split).rows;
  const row = parseInt($("jump").value, 10);
  if (!(row >= 0 && row < total)) { showError(`row ${$("jump").value}: ${state.split} has rows 0 to ${total - 1}`); return; }
  showError("");
  // a row index is a position in the whole split, so the label filter is lifted
  go({ label: "", offset: Math.floor(row / info.page_rows) * info.page_rows, row, slice: null });
  $("filter").value = "";
  loadRows().then(() => { const tr = document.querySelector("#rows tr.selected"); if (tr) tr.scrollIntoView({ block: "nearest" }); });
});
$("rows").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-row]");
  const vol = info && info.columns.find((c) => c.kind === "array3d");
  if (tr && vol) showVolume(parseInt(tr.dataset.row, 10), vol);
});
for (const radio of document.querySelectorAll("input[name=axis]")) {
  radio.addEventListener("change", () => {
    state.axis = parseInt(radio.value, 10);
    state.slice = null;
    showVolume(state.row, info.columns.find((c) => c.kind === "array3d"));
  });
}
$("slice").addEventListener("input", () => { state.slice = parseInt($("slice").value, 10); drawSlice(); });
$("copy").addEventListener("click", async () => {
  const text = $("loadcode").textContent;
  try { await navigator.clipboard.writeText(text); }
  catch (e) { const r = document.createRange(); r.selectNodeContents($("loadcode")); getSelection().removeAllRanges(); getSelection().addRange(r); document.execCommand("copy"); }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
});
$("wholecard").addEventListener("click", async (e) => {
  e.preventDefault();
  const body = await api("/api/card", {});
  $("card").innerHTML = markdown(body.markdown);
  $("cardbox").open = true;
});

// a hash typed or pasted into the address bar (replaceState above fires no event)
window.addEventListener("hashchange", () => {
  if (!location.hash.includes("=")) return;
  readHash();
  volume = null;
  if ([...$("config").options].some((o) => o.value === state.config)) $("config").value = state.config;
  else state.config = $("config").value;
  loadConfig();
});

(async function main() {
  readHash();
  try { await loadConfigs(); } catch (e) { showError(e.message); return; }
  await loadConfig();
  document.body.dataset.ready = "1";  // the browser tests wait for this
})();
