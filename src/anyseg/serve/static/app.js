// anyseg serve — browser UI (vanilla ES module, no build step, works offline).
//
// Prompts: left click = positive point, right click / shift-click = negative point, drag = box.
// Every prompt calls POST /api/images/{id}/predict with all current points (+ box); the first
// prompt asks for 3 candidate masks (multimask), later ones send the chosen mask as mask_rle.
// Masks travel as COCO compressed RLE (column-major); decodeRLE / encodeRLE below.

// ---------------------------------------------------------------------------------------------
// COCO RLE (the same format as pycocotools' maskApi.c: rleToString / rleFrString)
// ---------------------------------------------------------------------------------------------

/** Compressed counts string -> array of run lengths (first run counts zeros). */
export function countsFromString(s) {
  const cnts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      if (p >= s.length) throw new Error("truncated RLE counts string");
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);   // sign extension
    }
    if (cnts.length > 2) x += cnts[cnts.length - 2];
    cnts.push(x);
  }
  return cnts;
}

/** Array of run lengths -> compressed counts string. */
export function countsToString(cnts) {
  let s = "";
  for (let i = 0; i < cnts.length; i++) {
    let x = cnts[i];
    if (i > 2) x -= cnts[i - 2];
    let more = true;
    while (more) {
      let c = ((x % 32) + 32) % 32;            // x & 0x1f for any sign
      x = Math.floor(x / 32);                  // arithmetic shift right by 5
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/**
 * Decode a COCO RLE ({size: [h, w], counts: string | number[]}) into a row-major mask.
 * Returns {height, width, data: Uint8Array(h*w) of 0/1}.
 */
export function decodeRLE(rle) {
  const [h, w] = rle.size;
  const cnts = typeof rle.counts === "string" ? countsFromString(rle.counts) : Array.from(rle.counts);
  const data = new Uint8Array(h * w);
  let idx = 0, v = 0;
  for (const n of cnts) {
    if (v) {
      const end = Math.min(idx + n, h * w);
      for (let j = idx; j < end; j++) {
        // column-major index j -> (row j % h, col j / h)
        data[(j % h) * w + Math.floor(j / h)] = 1;
      }
    }
    idx += n; v ^= 1;
  }
  if (idx !== h * w) throw new Error(`RLE runs cover ${idx} pixels, expected ${h * w}`);
  return { height: h, width: w, data };
}

/** Encode a row-major 0/1 mask (any array-like of h*w) into COCO compressed RLE. */
export function encodeRLE(data, height, width) {
  const h = height, w = width;
  const cnts = [];
  let prev = 0, run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = data[y * w + x] ? 1 : 0;
      if (v !== prev) { cnts.push(run); run = 0; prev = v; }
      run++;
    }
  }
  cnts.push(run);
  return { size: [h, w], counts: countsToString(cnts) };
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
];
const CURRENT_COLOUR = [30, 144, 255];  // the mask being edited
const ALPHA = 0.5;

export const state = {
  imageId: null,
  projectId: null,
  projectName: null,
  width: 0,
  height: 0,
  image: null,           // HTMLImageElement
  points: [],            // [[x, y], ...] original-image pixels
  labels: [],            // 1 positive / 0 negative
  box: null,             // [x0, y0, x1, y1] | null
  candidates: [],        // [{rle, score, box, area, mask: {height, width, data}, canvas}]
  chosen: -1,            // index into candidates
  history: [],           // snapshots for undo
  annotations: [],       // [{id, image_id, label, rle, score, metadata, canvas, colour}]
  busy: 0,               // requests in flight
  predictSeq: 0,         // only the latest predict response is applied
  lastSeconds: null,
  ready: false,          // initial load finished
};

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

// ---------------------------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------------------------

function setStatus(text, kind = "ok") {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = kind;
}

// Access token: a server started with --token / ANYSEG_TOKEN answers 401 to /api requests
// without "Authorization: Bearer <token>". The first 401 asks for the token once; it is kept in
// sessionStorage (this tab only) and sent with every later request.
const TOKEN_KEY = "anyseg.token";

function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

function askToken() {
  const t = window.prompt("This anyseg server needs its access token (from --token or ANYSEG_TOKEN):");
  if (t == null || !t.trim()) return null;
  try { sessionStorage.setItem(TOKEN_KEY, t.trim()); } catch { /* storage may be disabled */ }
  return t.trim();
}

/** fetch() with the token; on a 401 asks for the token (once per failure) and retries once. */
async function authFetch(url, opts = {}) {
  const send = (token) => {
    const headers = { ...(opts.headers || {}) };
    if (token) headers["Authorization"] = `Bearer ${token}`;
    return fetch(url, { ...opts, headers });
  };
  const sent = getToken();
  let resp = await send(sent);
  if (resp.status === 401) {
    let token = getToken();
    if (!token || token === sent) {  // not already replaced by another request's prompt
      try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* */ }
      token = askToken();
    }
    if (token) resp = await send(token);
  }
  return resp;
}

async function api(method, url, body, { quiet = false } = {}) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  state.busy++;
  try {
    let resp;
    try {
      resp = await authFetch(url, opts);
    } catch (err) {
      throw new Error(`network error: ${err.message}`);
    }
    const text = await resp.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch { data = text; } }
    if (!resp.ok) {
      let detail = data && typeof data === "object" && "detail" in data ? data.detail : (data || resp.statusText);
      if (typeof detail !== "string") detail = JSON.stringify(detail);
      const err = new Error(`${method} ${url.split("?")[0]}: ${resp.status} ${detail}`);
      err.status = resp.status; err.detail = detail;
      throw err;
    }
    return data;
  } catch (err) {
    if (!quiet) setStatus(err.message, "error");
    throw err;
  } finally {
    state.busy--;
  }
}

// ---------------------------------------------------------------------------------------------
// Mask rendering
// ---------------------------------------------------------------------------------------------

/** An offscreen canvas holding the mask painted in `colour` (opaque; alpha applied on draw). */
function maskCanvas(mask, colour) {
  const c = document.createElement("canvas");
  c.width = mask.width; c.height = mask.height;
  const g = c.getContext("2d");
  const img = g.createImageData(mask.width, mask.height);
  const px = img.data, d = mask.data;
  for (let i = 0; i < d.length; i++) {
    if (d[i]) {
      const o = i * 4;
      px[o] = colour[0]; px[o + 1] = colour[1]; px[o + 2] = colour[2]; px[o + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
  return c;
}

function colourOf(i) { return PALETTE[i % PALETTE.length]; }
function css(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }

let dragRect = null;  // box being dragged (image pixels)

function render() {
  if (!state.image) return;
  ctx.save();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = ALPHA;
  for (const a of state.annotations) if (a.canvas && !a.hidden) ctx.drawImage(a.canvas, 0, 0);
  const cur = state.candidates[state.chosen];
  if (cur) ctx.drawImage(cur.canvas, 0, 0);
  ctx.globalAlpha = 1;

  // prompts, drawn at a size that stays readable whatever the display scale
  const scale = canvas.width / Math.max(1, canvas.getBoundingClientRect().width || canvas.width);
  const r = 5 * scale;
  ctx.lineWidth = 2 * scale;
  const box = dragRect || state.box;
  if (box) {
    ctx.strokeStyle = "#ffd400";
    ctx.setLineDash(dragRect ? [6 * scale, 4 * scale] : []);
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    ctx.setLineDash([]);
  }
  state.points.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = state.labels[i] ? "#27c93f" : "#ff3b30";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  });
  ctx.restore();
  canvas.dataset.renders = String((Number(canvas.dataset.renders) || 0) + 1);
}

function renderCandidates() {
  const box = $("candidates");
  box.replaceChildren();
  state.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.id = `candidate-${i}`;
    b.title = `Candidate ${i + 1} (key ${i + 1})`;
    if (i === state.chosen) b.classList.add("selected");
    const th = document.createElement("canvas");
    const tw = 96, thh = Math.max(1, Math.round(96 * state.height / Math.max(1, state.width)));
    th.width = tw; th.height = thh;
    const g = th.getContext("2d");
    g.drawImage(state.image, 0, 0, tw, thh);
    g.globalAlpha = 0.6;
    g.drawImage(c.canvas, 0, 0, tw, thh);
    const cap = document.createElement("span");
    cap.textContent = `${i + 1}: ${Number(c.score ?? 0).toFixed(2)}`;
    b.append(th, cap);
    b.addEventListener("click", () => choose(i));
    box.append(b);
  });
  $("save").disabled = state.chosen < 0;
  $("undo").disabled = state.history.length === 0;
}

function renderObjects() {
  const ul = $("objects");
  ul.replaceChildren();
  for (const a of state.annotations) {
    const li = document.createElement("li");
    li.dataset.id = a.id;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = css(a.colour);
    sw.title = "show / hide";
    sw.addEventListener("click", () => { a.hidden = !a.hidden; sw.style.opacity = a.hidden ? 0.3 : 1; render(); });
    const lab = document.createElement("input");
    lab.type = "text";
    lab.className = "obj-label";
    lab.value = a.label ?? "";
    lab.title = "rename (Enter)";
    lab.addEventListener("change", () => renameAnnotation(a, lab.value));
    const sc = document.createElement("span");
    sc.className = "score";
    sc.textContent = a.score != null ? Number(a.score).toFixed(2) : "";
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.textContent = "✕";
    del.title = "delete";
    del.addEventListener("click", () => deleteAnnotation(a));
    li.append(sw, lab, sc, del);
    ul.append(li);
  }
}

/** Scale the canvas (CSS size) to fill the stage, keeping the aspect ratio; drawing stays in image pixels. */
function fitCanvas() {
  if (!state.image) return;
  const stage = $("stage");
  const availW = Math.max(100, stage.clientWidth - 4);
  const availH = Math.max(100, window.innerHeight - 130);
  const k = Math.min(availW / state.width, availH / state.height, 4);
  canvas.style.width = `${Math.round(state.width * k)}px`;
  canvas.style.height = `${Math.round(state.height * k)}px`;
}

function renderAll() { render(); renderCandidates(); renderObjects(); updateExports(); }

// ---------------------------------------------------------------------------------------------
// Project / image loading
// ---------------------------------------------------------------------------------------------

function remember() {
  const params = new URLSearchParams(location.search);
  if (state.imageId != null) params.set("image", state.imageId); else params.delete("image");
  if (state.projectId != null) params.set("project", state.projectId);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  try {
    if (state.imageId != null) localStorage.setItem("anyseg.image", String(state.imageId));
    if (state.projectId != null) localStorage.setItem("anyseg.project", String(state.projectId));
  } catch { /* storage may be disabled */ }
}

function updateExports() {
  const ids = { coco: "export-coco", yolo: "export-yolo", png: "export-png" };
  for (const [fmt, id] of Object.entries(ids)) {
    const a = $(id);
    if (state.projectId != null) {
      a.href = `/api/projects/${encodeURIComponent(state.projectId)}/export?format=${fmt}`;
      a.classList.remove("disabled");
    } else {
      a.href = "#";
      a.classList.add("disabled");
    }
  }
  $("project-name").textContent = state.projectName ? `project: ${state.projectName}` : "";
}

async function ensureProject(wanted) {
  const projects = await api("GET", "/api/projects");
  const list = Array.isArray(projects) ? projects : (projects?.projects ?? []);
  let p = wanted != null ? list.find((q) => String(q.id) === String(wanted)) : null;
  if (!p) p = list.find((q) => q.name === "default");
  if (!p) p = await api("POST", "/api/projects", { name: "default" });
  state.projectId = p.id;
  state.projectName = p.name;
  updateExports();
}

function loadImageElement(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load image ${url}`));
    if (!getToken()) { img.src = url; return; }
    // with a token the bytes come through fetch (an <img src> cannot send the header)
    authFetch(url).then(async (resp) => {
      if (!resp.ok) throw new Error(`could not load image ${url}: ${resp.status}`);
      img.src = URL.createObjectURL(await resp.blob());
    }).catch(reject);
  });
}

function resetPrompts() {
  state.points = []; state.labels = []; state.box = null;
  state.candidates = []; state.chosen = -1; state.history = [];
  state.predictSeq++;
}

async function openImage(id) {
  const img = await loadImageElement(`/api/images/${encodeURIComponent(id)}`);
  state.imageId = id;
  state.image = img;
  state.width = img.naturalWidth;
  state.height = img.naturalHeight;
  canvas.width = state.width;
  canvas.height = state.height;
  $("dropzone").classList.remove("empty");
  fitCanvas();
  resetPrompts();
  state.annotations = [];
  remember();
  await loadAnnotations();
  renderAll();
}

function prepareAnnotation(a, i) {
  a.colour = colourOf(i);
  try {
    const m = decodeRLE(a.rle);
    a.canvas = maskCanvas(m, a.colour);
    a.box = a.box || maskBox(m);
  } catch (err) {
    a.canvas = null;
    setStatus(`annotation ${a.id}: bad RLE (${err.message})`, "error");
  }
  return a;
}

function maskBox(m) {
  let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
  for (let y = 0; y < m.height; y++) {
    for (let x = 0; x < m.width; x++) {
      if (m.data[y * m.width + x]) {
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
}

async function loadAnnotations() {
  if (state.projectId == null || state.imageId == null) return;
  const url = `/api/projects/${encodeURIComponent(state.projectId)}/annotations?image_id=${encodeURIComponent(state.imageId)}`;
  const list = await api("GET", url);
  const arr = Array.isArray(list) ? list : (list?.annotations ?? []);
  state.annotations = arr.filter((a) => String(a.image_id) === String(state.imageId)).map(prepareAnnotation);
}

async function upload(file) {
  if (!file) return;
  const fd = new FormData();
  fd.append("file", file, file.name);
  setStatus(`Uploading ${file.name}…`, "busy");
  try {
    const info = await api("POST", "/api/images", fd);
    if (state.projectId == null) await ensureProject(null);
    await openImage(info.id);
    setStatus(`Opened ${info.file_name ?? file.name} (${info.width}×${info.height}). Click an object.`);
  } catch (err) {
    /* status already shows the API's detail */
  }
}

// ---------------------------------------------------------------------------------------------
// Prompts and prediction
// ---------------------------------------------------------------------------------------------

function snapshot() {
  return {
    points: state.points.map((p) => p.slice()), labels: state.labels.slice(), box: state.box && state.box.slice(),
    candidates: state.candidates, chosen: state.chosen,
  };
}

function restore(s) {
  state.points = s.points; state.labels = s.labels; state.box = s.box;
  state.candidates = s.candidates; state.chosen = s.chosen;
}

async function addPrompt(kind, value, label) {
  if (state.imageId == null) { setStatus("Open an image first.", "error"); return; }
  state.history.push(snapshot());
  if (kind === "point") { state.points.push(value); state.labels.push(label); }
  else state.box = value;
  render();
  await predict();
}

async function predict() {
  if (state.points.length === 0 && !state.box) {
    state.candidates = []; state.chosen = -1; renderAll(); return;
  }
  const prev = state.candidates[state.chosen];
  const first = state.history.length <= 1 || !prev;
  const body = {
    points: state.points, labels: state.labels, box: state.box,
    mask_rle: first ? null : prev.rle, multimask: first,
  };
  const seq = ++state.predictSeq;
  setStatus("Predicting…", "busy");
  let res;
  try {
    res = await api("POST", `/api/images/${encodeURIComponent(state.imageId)}/predict`, body);
  } catch (err) {
    return;
  }
  if (seq !== state.predictSeq) return;  // a newer prompt superseded this one
  const masks = res.masks || [];
  state.candidates = masks.map((m) => {
    const mask = decodeRLE(m.rle);
    return { ...m, mask, canvas: maskCanvas(mask, CURRENT_COLOUR) };
  });
  let best = -1, bestScore = -Infinity;
  state.candidates.forEach((c, i) => { if ((c.score ?? 0) > bestScore) { bestScore = c.score ?? 0; best = i; } });
  state.chosen = best;
  state.lastSeconds = res.seconds;
  renderAll();
  const t = res.seconds != null ? ` in ${(res.seconds * 1000).toFixed(0)} ms` : "";
  setStatus(`${masks.length} mask${masks.length === 1 ? "" : "s"}${t}. Enter saves, 1/2/3 picks, z undoes.`);
}

function choose(i) {
  if (i < 0 || i >= state.candidates.length) return;
  state.chosen = i;
  render(); renderCandidates();
}

function undo() {
  if (!state.history.length) return;
  state.predictSeq++;  // drop any response still in flight
  restore(state.history.pop());
  renderAll();
  setStatus("Undone.");
}

function clearPrompts() {
  resetPrompts();
  dragRect = null;
  renderAll();
  setStatus("Cleared.");
}

// ---------------------------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------------------------

async function save() {
  const cur = state.candidates[state.chosen];
  if (!cur) { setStatus("Nothing to save: click an object first.", "error"); return; }
  if (state.projectId == null) await ensureProject(null);
  const label = $("label").value.trim() || "object";
  const body = {
    image_id: state.imageId, label, rle: cur.rle, score: cur.score ?? null,
    metadata: { points: state.points, labels: state.labels, box: state.box, source: "anyseg-ui" },
  };
  try {
    const saved = await api("POST", `/api/projects/${encodeURIComponent(state.projectId)}/annotations`, body);
    const a = prepareAnnotation({ ...body, ...saved, rle: saved?.rle ?? cur.rle }, state.annotations.length);
    state.annotations.push(a);
    resetPrompts();
    renderAll();
    remember();
    setStatus(`Saved “${label}” (#${a.id}).`);
  } catch (err) { /* status shows the detail */ }
}

async function deleteAnnotation(a) {
  try {
    await api("DELETE", `/api/annotations/${encodeURIComponent(a.id)}`);
    state.annotations = state.annotations.filter((b) => b !== a);
    renderAll();
    setStatus(`Deleted “${a.label}”.`);
  } catch (err) { /* status */ }
}

async function renameAnnotation(a, label) {
  try {
    const res = await api("PATCH", `/api/annotations/${encodeURIComponent(a.id)}`, { label });
    a.label = res?.label ?? label;
    render();
    setStatus(`Renamed to “${a.label}”.`);
  } catch (err) { renderObjects(); }
}

function exportCoco() {
  if (state.projectId == null) { setStatus("No project yet.", "error"); return; }
  $("export-coco").click();
}

/** With a token, export links download through fetch (a plain link cannot send the header). */
async function downloadWithToken(ev) {
  const a = ev.currentTarget;
  if (!getToken() || a.classList.contains("disabled")) return;
  ev.preventDefault();
  try {
    const resp = await authFetch(a.href);
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail ?? detail; } catch { /* */ }
      setStatus(`export: ${resp.status} ${detail}`, "error");
      return;
    }
    const match = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await resp.blob());
    link.download = match ? match[1] : "export";
    document.body.appendChild(link);
    link.click();
    link.remove();
  } catch (err) { setStatus(`export: ${err.message}`, "error"); }
}

for (const id of ["export-coco", "export-yolo", "export-png"]) $(id).addEventListener("click", downloadWithToken);

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) * canvas.width / r.width;
  const y = (ev.clientY - r.top) * canvas.height / r.height;
  return [Math.max(0, Math.min(canvas.width - 1, x)), Math.max(0, Math.min(canvas.height - 1, y))];
}

let down = null;  // {x, y, clientX, clientY, button, shift}
const DRAG_PX = 5;

canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("mousedown", (ev) => {
  if (!state.image) return;
  ev.preventDefault();
  canvas.focus();
  const [x, y] = toImage(ev);
  down = { x, y, clientX: ev.clientX, clientY: ev.clientY, button: ev.button, shift: ev.shiftKey };
});
window.addEventListener("mousemove", (ev) => {
  if (!down || down.button !== 0) return;
  if (Math.hypot(ev.clientX - down.clientX, ev.clientY - down.clientY) < DRAG_PX) { if (dragRect) { dragRect = null; render(); } return; }
  const [x, y] = toImage(ev);
  dragRect = [Math.min(down.x, x), Math.min(down.y, y), Math.max(down.x, x), Math.max(down.y, y)];
  render();
});
window.addEventListener("mouseup", (ev) => {
  if (!down) return;
  const d = down;
  down = null;
  if (dragRect) {
    const b = dragRect.map((v) => Math.round(v));
    dragRect = null;
    if (b[2] - b[0] >= 2 && b[3] - b[1] >= 2) addPrompt("box", b);
    else render();
    return;
  }
  if (ev.target !== canvas) return;
  const negative = d.button === 2 || d.shift || ev.shiftKey;
  if (d.button !== 0 && d.button !== 2) return;
  addPrompt("point", [Math.round(d.x), Math.round(d.y)], negative ? 0 : 1);
});

$("file").addEventListener("change", (ev) => {
  const f = ev.target.files && ev.target.files[0];
  upload(f);
  ev.target.value = "";
});

const dz = $("dropzone");
for (const t of ["dragenter", "dragover"]) {
  document.addEventListener(t, (ev) => { ev.preventDefault(); dz.classList.add("dragover"); });
}
document.addEventListener("dragleave", (ev) => { if (ev.target === dz || ev.target === document.documentElement) dz.classList.remove("dragover"); });
document.addEventListener("drop", (ev) => {
  ev.preventDefault();
  dz.classList.remove("dragover");
  const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
  if (f) upload(f);
});

$("save").addEventListener("click", save);
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearPrompts);
$("label").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter") { ev.preventDefault(); save(); }
  else if (ev.key === "Escape") { ev.target.blur(); }
});

document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
  const k = ev.key;
  if ((ev.ctrlKey || ev.metaKey) && (k === "z" || k === "Z")) { ev.preventDefault(); undo(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (k === "Enter" || k === "s") { ev.preventDefault(); save(); }
  else if (k === "z") { ev.preventDefault(); undo(); }
  else if (k === "Escape") { ev.preventDefault(); clearPrompts(); }
  else if (k === "1" || k === "2" || k === "3") { ev.preventDefault(); choose(Number(k) - 1); }
  else if (k === "e") { ev.preventDefault(); exportCoco(); }
});

window.addEventListener("resize", () => { fitCanvas(); render(); });

// ---------------------------------------------------------------------------------------------
// Start-up: ?image=ID&project=PID, else what localStorage remembers
// ---------------------------------------------------------------------------------------------

async function init() {
  const params = new URLSearchParams(location.search);
  let stored = {};
  try { stored = { image: localStorage.getItem("anyseg.image"), project: localStorage.getItem("anyseg.project") }; } catch { /* */ }
  const wantProject = params.get("project") ?? stored.project;
  const wantImage = params.get("image") ?? stored.image;
  try {
    await ensureProject(wantProject);
    if (wantImage != null && wantImage !== "") {
      try {
        await openImage(wantImage);
        setStatus(`Reopened image ${wantImage} with ${state.annotations.length} saved object(s).`);
      } catch (err) {
        setStatus(`Could not reopen image ${wantImage}: ${err.message}`, "error");
        try { localStorage.removeItem("anyseg.image"); } catch { /* */ }
      }
    } else {
      setStatus("Ready. Open or drop an image.");
    }
  } catch (err) { /* status shows it */ }
  renderCandidates();
  state.ready = true;
  document.body.dataset.ready = "1";
}

window.anyseg = { state, decodeRLE, encodeRLE, countsFromString, countsToString, render, predict, save, undo };
init();
