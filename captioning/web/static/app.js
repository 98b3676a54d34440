// The captioning page: choose or drop photos, preview them, send them to POST /api/captions,
// show each caption with its annotated PNG (and attention map) or its error next to the photo.
// Plain JavaScript, no build step; every text from the server is set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("form");
const input = $("files");
const drop = $("drop");
const captionButton = $("caption");
const clearButton = $("clear");
const busy = $("busy");
const message = $("message");
const list = $("photos");
const beamSelect = $("beam");

// Overwritten by GET /api/limits; these are only used if that request fails.
let limits = { max_files: 16, max_file_bytes: 20 * 1024 * 1024, max_request_bytes: 64 * 1024 * 1024,
               max_beam_size: 10, default_beam_size: 3, attention_maps: false };
const photos = []; // {file, card, state: "ready" | "working" | "done" | "error", previewUrl}
let working = false;

function megabytes(bytes) {
  // As the server words it: "12.3 MB", "35 KB", "18 bytes".
  if (bytes >= 1024 * 1024) return (bytes / (1024 * 1024)).toFixed(1) + " MB";
  return bytes >= 1024 ? Math.round(bytes / 1024) + " KB" : bytes + " bytes";
}

function limitUnit(limit) {
  // The unit a limit is a whole number of, as the server's app.over_limit chooses it.
  if (limit >= 1024 * 1024 && limit % (1024 * 1024) === 0) return { unit: 1024 * 1024, name: "MiB" };
  if (limit >= 1024 && limit % 1024 === 0) return { unit: 1024, name: "KiB" };
  return { unit: 1, name: "bytes" };
}

function limitSize(limit) {
  // "20 MiB", in the unit the limit is a whole number of.
  const { unit, name } = limitUnit(limit);
  return (limit / unit).toLocaleString("en-US") + " " + name;
}

function overLimit(size, limit) {
  // As the server words it (app.over_limit): "20.03 MiB, over the 20 MiB limit", both in the unit
  // the limit is a whole number of, the size with the decimals it needs to read as over the limit.
  const { unit, name } = limitUnit(limit);
  let limitText = unit > 1 ? limitSize(limit) : limit.toLocaleString("en-US") + "-byte";
  for (let decimals = 1; unit > 1 && decimals <= 3; decimals++) {
    const shown = Number((size / unit).toFixed(decimals));
    if (shown > limit / unit) return shown.toFixed(decimals) + " " + name + ", over the " + limitText + " limit";
  }
  if (unit > 1) limitText += " (" + limit.toLocaleString("en-US") + "-byte)";
  return size.toLocaleString("en-US") + " bytes, over the " + limitText + " limit";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function downloadName(name, kind) {
  const stem = name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "photo";
  return stem + "_" + kind + ".png";
}

async function loadSettings() {
  try {
    const response = await fetch("/api/limits");
    if (response.ok) limits = await response.json();
  } catch (error) { /* keep the defaults above */ }
  for (let beam = 1; beam <= limits.max_beam_size; beam++) {
    const option = element("option", "", beam === 1 ? "1 (greedy)" : String(beam));
    option.value = String(beam);
    option.selected = beam === limits.default_beam_size;
    beamSelect.append(option);
  }
  $("limits").textContent = "Up to " + limitSize(limits.max_file_bytes) + " per photo; "
    + limits.max_files + " photos are sent at a time.";
  try {
    const response = await fetch("/api/model");
    const model = await response.json();
    let kind = model.decoder + " decoder";
    if (model.ensemble_members) kind = "ensemble of " + model.ensemble_members + " " + model.decoder + " decoders";
    $("model").textContent = "Model: " + model.name + " (" + model.encoder + " + " + kind + ")";
  } catch (error) {
    $("model").textContent = "Model: description unavailable";
  }
}

function updateButtons() {
  const ready = photos.some((photo) => photo.state === "ready");
  captionButton.disabled = working || !ready;
  clearButton.disabled = working || photos.length === 0;
  input.disabled = working;
}

function setState(photo, state) {
  photo.state = state;
  photo.card.dataset.state = state;
}

function showError(photo, text) {
  setState(photo, "error");
  const line = photo.card.querySelector(".error");
  line.textContent = text;
  line.hidden = false;
  photo.card.querySelector(".remove").hidden = false;
}

function addFiles(files) {
  message.textContent = "";
  for (const file of files) {
    const card = element("li", "photo");
    card.dataset.name = file.name;
    const figure = element("figure");
    const preview = element("img", "preview");
    const previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.alt = "Preview of " + file.name;
    preview.addEventListener("error", () => {
      preview.replaceWith(element("p", "no-preview", "No preview: the browser cannot show this file."));
    }, { once: true });
    const caption = element("figcaption");
    caption.append(element("span", "name", file.name), element("span", "size", megabytes(file.size)));
    figure.append(preview, caption);
    const text = element("p", "caption");
    text.hidden = true;
    const error = element("p", "error");
    error.setAttribute("role", "alert");
    error.hidden = true;
    const links = element("p", "links");
    links.hidden = true;
    const remove = element("button", "button remove", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", "Remove " + file.name);
    const photo = { file, card, state: "ready", previewUrl };
    remove.addEventListener("click", () => removePhoto(photo));
    card.append(figure, text, error, links, remove);
    list.append(card);
    photos.push(photo);
    setState(photo, "ready");
    if (file.size > limits.max_file_bytes) {
      showError(photo, file.name + ": file is too large (" + overLimit(file.size, limits.max_file_bytes)
        + "); resize or compress it");
    }
  }
  updateButtons();
}

function removePhoto(photo) {
  const index = photos.indexOf(photo);
  if (index >= 0) photos.splice(index, 1);
  URL.revokeObjectURL(photo.previewUrl);
  photo.card.remove();
  updateButtons();
  (photos.length ? photos[Math.min(index, photos.length - 1)].card.querySelector("button") : input).focus();
}

function clearAll() {
  for (const photo of photos) URL.revokeObjectURL(photo.previewUrl);
  photos.length = 0;
  list.replaceChildren();
  message.textContent = "";
  input.value = "";
  updateButtons();
  input.focus();
}

function fullSizeLink(image, url) {
  // The card shows the PNG scaled down; the link opens it at full size.
  const link = element("a", "full-size");
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener";
  link.title = "Open full size";
  link.append(image);
  return link;
}

function showResult(photo, result) {
  if (result.error) {
    showError(photo, result.error);
    return;
  }
  const card = photo.card;
  const name = photo.file.name;
  const text = card.querySelector(".caption");
  text.textContent = result.caption;
  text.hidden = false;
  const annotated = element("img", "annotated");
  annotated.src = result.png;
  annotated.alt = name + " with its caption beneath it: " + result.caption;
  card.querySelector(".preview, .no-preview").replaceWith(fullSizeLink(annotated, result.png));
  const links = card.querySelector(".links");
  const download = element("a", "", "Download PNG");
  download.href = result.png;
  download.download = downloadName(name, "captioned");
  links.append(download);
  links.hidden = false;
  if (result.attention_map) {
    const details = element("details", "attention");
    details.append(element("summary", "", "Where the model looked for each word"));
    const map = element("img");
    map.loading = "lazy";
    map.alt = "Attention map of " + name + ": one panel per word of \u201c" + result.caption
      + "\u201d, brighter where the model looked";
    // Fetched only when opened: the server computes the map on first request.
    details.addEventListener("toggle", () => { if (details.open && !map.src) map.src = result.attention_map; });
    const save = element("a", "", "Download attention map");
    save.href = result.attention_map;
    save.download = downloadName(name, "attention");
    const saveLine = element("p", "links");
    saveLine.append(save);
    details.append(fullSizeLink(map, result.attention_map), saveLine);
    card.insertBefore(details, card.querySelector(".remove"));
  }
  setState(photo, "done");
  card.querySelector(".remove").hidden = true;
}

function chunks(pending) {
  // Groups that respect the server's per-request count and size limits.
  const groups = [];
  let group = [];
  let bytes = 0;
  const budget = limits.max_request_bytes - 64 * 1024; // room for the multipart headers
  for (const photo of pending) {
    if (group.length && (group.length >= limits.max_files || bytes + photo.file.size > budget)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(photo);
    bytes += photo.file.size;
  }
  if (group.length) groups.push(group);
  return groups;
}

async function captionGroup(group) {
  const body = new FormData();
  for (const photo of group) body.append("files", photo.file, photo.file.name);
  body.append("beam_size", beamSelect.value);
  let response;
  let payload = null;
  try {
    response = await fetch("/api/captions", { method: "POST", body });
    payload = await response.json().catch(() => null);
  } catch (error) {
    for (const photo of group) showError(photo, photo.file.name + ": the server could not be reached; is it still running?");
    return;
  }
  if (!response.ok || !payload || !Array.isArray(payload.results)) {
    let detail = payload && payload.detail ? payload.detail : "HTTP " + response.status;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    for (const photo of group) showError(photo, photo.file.name + ": not captioned (" + detail + ")");
    return;
  }
  payload.results.forEach((result, index) => showResult(group[index], result));
}

async function captionPending(event) {
  event.preventDefault();
  const pending = photos.filter((photo) => photo.state === "ready");
  if (!pending.length || working) return;
  working = true;
  updateButtons();
  form.setAttribute("aria-busy", "true");
  busy.replaceChildren(element("span", "spinner"), document.createTextNode(
    " Captioning " + pending.length + (pending.length === 1 ? " photo…" : " photos…")));
  busy.firstChild.setAttribute("aria-hidden", "true");
  for (const photo of pending) setState(photo, "working");
  for (const group of chunks(pending)) await captionGroup(group);
  const failed = pending.filter((photo) => photo.state === "error").length;
  working = false;
  form.removeAttribute("aria-busy");
  busy.textContent = "Captioned " + (pending.length - failed) + " of " + pending.length + ".";
  updateButtons();
}

input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
form.addEventListener("submit", captionPending);
clearButton.addEventListener("click", clearAll);
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  if (!working && event.dataTransfer) addFiles(event.dataTransfer.files);
});
// A photo dropped beside the drop zone must not make the browser leave the page to show it.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

loadSettings().then(updateButtons);
