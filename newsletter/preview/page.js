"use strict";
const $ = (id) => document.getElementById(id);
const frame = $("email");
const params = new URLSearchParams(location.search);
const view = {
  width: params.get("width") === "mobile" ? "mobile" : "desktop",
  part: params.get("part") === "text" ? "text" : "html",
  sample: Math.max(0, parseInt(params.get("sample") || "0", 10) || 0),
};
let state = JSON.parse($("initial-state").textContent);
let online = false;
let restoreScroll = 0;
// Read by the tests and the benchmark: which build the frame shows, and when it loaded.
window.preview = { loads: 0, requestedBuild: 0, loadedBuild: 0, loadedAt: 0 };

function loadFrame(keepScroll) {
  restoreScroll = 0;
  if (keepScroll) {
    try { restoreScroll = frame.contentWindow.scrollY; } catch (err) { restoreScroll = 0; }
  }
  window.preview.requestedBuild = state.build;
  const ext = view.part === "text" ? "txt" : "html";
  frame.src = `/email.${ext}?sample=${view.sample}&build=${state.instance}-${state.build}`;
}

frame.addEventListener("load", () => {
  if (restoreScroll) {
    try { frame.contentWindow.scrollTo(0, restoreScroll); } catch (err) { /* not ours */ }
  }
  restoreScroll = 0;
  window.preview.loads += 1;
  window.preview.loadedBuild = window.preview.requestedBuild;
  window.preview.loadedAt = Date.now();
});

function setText(id, text) { $(id).textContent = text || ""; }

function renderSamples() {
  const select = $("sample");
  const labels = state.samples.map((s) => s.label);
  if (labels.length && view.sample >= labels.length) view.sample = 0;
  const current = Array.from(select.options).map((o) => o.textContent);
  if (labels.length && current.join("\n") !== labels.join("\n")) {
    select.replaceChildren(...labels.map((label, index) => new Option(label, String(index))));
  }
  select.value = String(view.sample);
  select.disabled = !labels.length;
}

function render() {
  const ui = state.ui;  // the page's words, in the newsletter's language
  $("device").dataset.width = view.width;
  $(`width-${view.width}`).checked = true;
  $(`part-${view.part}`).checked = true;
  renderSamples();
  setText("issue", state.issue || "");
  const sample = state.samples[view.sample];
  const sender = state.sender || { name: "", address: "" };
  setText("from-name", sender.name || sender.address);
  setText("from-address", sender.name ? `<${sender.address}>` : "");
  setText("avatar", (sender.name || sender.address || "?").trim().charAt(0).toUpperCase());
  setText("subject", sample ? sample.subject : "");
  setText("preheader", state.preheader);
  if (state.issue) document.title = `${ui.preview} · ${state.issue}`;

  const failure = state.failure;
  $("problems").hidden = !failure;
  if (failure) {
    const kept = state.build ? ` ${ui.kept}` : "";
    setText("problems-title", `${failure.title}${kept}`);
    $("problems-list").replaceChildren(...failure.problems.map((problem) => {
      const item = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = problem;
      item.append(code);
      return item;
    }));
    setText("problems-hint", failure.hint);
    $("problems-hint").hidden = !failure.hint;
  }
  $("notes").hidden = !state.notes.length;
  $("notes").replaceChildren(...state.notes.map((note) => {
    const item = document.createElement("li");
    item.textContent = note;
    return item;
  }));

  const status = $("status");
  if (!online) {
    status.dataset.state = "offline";
    status.textContent = ui.reconnecting;
  } else if (state.building) {
    status.dataset.state = "building";
    status.textContent = ui.rebuilding;
  } else if (failure) {
    status.dataset.state = "failed";
    status.textContent = ui.failed;
  } else {
    status.dataset.state = "live";
    const at = state.builtAt ? new Date(state.builtAt).toLocaleTimeString() : "";
    const took = state.seconds ? ` ${ui.took.replace("{ms}", Math.round(state.seconds * 1000))}` : "";
    status.textContent = `${ui.live} ${at}${took}`;
  }
}

function remember() {
  const query = new URLSearchParams({ width: view.width, part: view.part, sample: view.sample });
  history.replaceState(null, "", `?${query}`);
}

for (const input of document.querySelectorAll("input[name=width]")) {
  input.addEventListener("change", () => { view.width = input.value; remember(); render(); });
}
for (const input of document.querySelectorAll("input[name=part]")) {
  input.addEventListener("change", () => {
    view.part = input.value; remember(); render(); loadFrame(false);
  });
}
$("sample").addEventListener("change", (event) => {
  view.sample = Number(event.target.value); remember(); render(); loadFrame(true);
});

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => { online = true; render(); };
  source.onerror = () => { online = false; render(); };  // EventSource reconnects by itself
  source.onmessage = (event) => {
    const next = JSON.parse(event.data);
    const changed = next.instance !== state.instance || next.build !== state.build;
    state = next;
    online = true;
    render();
    if (changed) loadFrame(true);
  };
}

render();
loadFrame(false);
connect();
