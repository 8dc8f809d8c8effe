// kws demo page: microphone or WAV -> int16 PCM frames over the WebSocket; results drawn live.
// Frame: "KWS1", uint32 LE sequence number, int16 LE mono samples at the model's rate.
"use strict";
const $ = (id) => document.getElementById(id);
const CHUNK_MS = 40;
const COLORS = ["#e53935", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#fdd835",
  "#6d4c41", "#d81b60", "#3949ab", "#7cb342", "#546e7a"];
const state = {
  ws: null, hello: null, rate: 16000, seq: 0, sentAt: new Map(), history: [], latencies: [],
  windows: 0, detections: [], source: null, stopSource: null, audioMs: 0,
  // Detection latency: when a detection is shown minus when the audio at the end of its window
  // was captured. capture.start is the performance.now() time of the current source's stream
  // time 0, so stream time t (ms) was captured at capture.start + t.
  capture: { start: null, offset: Infinity, startCtx: null }, detectionLatencies: [],
};
window.kwsDemo = state; // read by the browser tests

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    setStatus(`disconnected${ev.reason ? ": " + ev.reason : ""}`, "closed");
    stopSource(false);
    $("mic").disabled = true;
  };
  state.ws = ws;
}

function onMessage(msg) {
  if (msg.type === "hello") return onHello(msg);
  if (msg.type === "results") return onResults(msg);
  if (msg.type === "error") return showError(msg.message);
  if (msg.type === "settings") {
    $("error").hidden = true; // the settings were taken: an earlier complaint no longer holds
    return fillSettings(msg.settings);
  }
  if (msg.type === "started") return setStatus(`live: ${state.source}`, "live");
  if (msg.type === "stopped") return setStatus("connected", "idle");
}

function onHello(msg) {
  state.hello = msg;
  state.rate = msg.model.sample_rate;
  setStatus("connected", "idle");
  $("mic").disabled = false;
  const m = msg.model;
  const rows = [["path", m.path], ["architecture", m.architecture], ["labels", m.labels.join(", ")],
    ["runs as", m.runs_as], ["input", m.input], ["features", m.features],
    ["clip stride", `${msg.clip_stride_ms} ms`]];
  $("model").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  $("tiles").replaceChildren(...m.labels.map((label) => {
    const t = document.createElement("div");
    t.className = "tile" + (label.startsWith("_") ? " meta" : "");
    t.dataset.label = label;
    t.textContent = label;
    return t;
  }));
  $("legend").replaceChildren(...m.labels.map((label, i) => {
    const s = document.createElement("span");
    s.style.color = COLORS[i % COLORS.length];
    s.textContent = "■ " + label;
    return s;
  }));
  fillSettings(msg.settings);
}

function fillSettings(settings) {
  state.settings = settings;
  for (const [k, v] of Object.entries(settings)) {
    const input = $("settings").elements[k];
    if (input) input.value = v;
  }
  drawChart();
}

function onResults(msg) {
  const sent = state.sentAt.get(msg.seq);
  state.sentAt.delete(msg.seq);
  if (msg.windows.length && sent !== undefined) {
    state.latencies.push(performance.now() - sent);
    if (state.latencies.length > 200) state.latencies.shift();
  }
  state.audioMs = msg.audio_ms;
  state.windows += msg.windows.length;
  for (const w of msg.windows) state.history.push(w);
  if (state.history.length > 240) state.history.splice(0, state.history.length - 240);
  for (const d of msg.detections) onDetection(d);
  drawChart();
  drawSpectrogram(msg.spectrogram);
  showLatency();
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

function showLatency() {
  const parts = [];
  if (state.latencies.length) parts.push(`result ${median(state.latencies).toFixed(0)} ms after its chunk`);
  const dl = state.detectionLatencies;
  if (dl.length) parts.push(`detection ${median(dl).toFixed(0)} ms after its window's audio`);
  $("latency").textContent = parts.length ? `latency (median): ${parts.join(", ")}` : "";
}

function onDetection(d) {
  state.detections.push(d);
  const li = document.createElement("li");
  li.textContent = `${(d.t / 1000).toFixed(2)} s  ${d.label}  ${d.score.toFixed(2)}  (${new Date().toLocaleTimeString()})`;
  $("log").prepend(li);
  $("count").textContent = state.detections.length;
  const tile = document.querySelector(`.tile[data-label="${CSS.escape(d.label)}"]`);
  if (tile) {
    tile.classList.add("lit");
    clearTimeout(tile.timer);
    tile.timer = setTimeout(() => tile.classList.remove("lit"), 1000);
  }
  if (state.capture.start !== null) {
    // d.t is the detecting window's centre: its audio ends half a clip later
    const windowEnd = d.t + state.hello.model.clip_duration_ms / 2;
    d.latency_ms = performance.now() - (state.capture.start + windowEnd);
    state.detectionLatencies.push(d.latency_ms);
  }
}

function drawChart() {
  const c = $("chart"), g = c.getContext("2d");
  g.fillStyle = "#111"; g.fillRect(0, 0, c.width, c.height);
  if (!state.hello) return;
  const th = state.settings ? state.settings.detection_threshold : 0;
  g.strokeStyle = "#888"; g.setLineDash([4, 4]);
  g.beginPath(); g.moveTo(0, c.height * (1 - th)); g.lineTo(c.width, c.height * (1 - th)); g.stroke();
  g.setLineDash([]);
  const h = state.history, dx = c.width / 240;
  state.hello.model.labels.forEach((_, li) => {
    g.strokeStyle = COLORS[li % COLORS.length];
    g.beginPath();
    h.forEach((w, i) => {
      const x = c.width - (h.length - i) * dx, y = c.height * (1 - w.scores[li]);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
}

const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
function color(v) {
  const x = (v / 255) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
  return STOPS[i].map((a, k) => a + (STOPS[i + 1][k] - a) * f);
}

function drawSpectrogram(columns) {
  if (!columns || !columns.length) return;
  const c = $("spectrogram"), g = c.getContext("2d"), n = columns.length;
  g.drawImage(c, -n, 0);
  const bands = columns[0].length, img = g.createImageData(n, c.height);
  for (let x = 0; x < n; x++) {
    for (let y = 0; y < c.height; y++) {
      const band = bands - 1 - Math.floor((y * bands) / c.height);
      const [r, gg, b] = color(columns[x][band]);
      const o = (y * n + x) * 4;
      img.data[o] = r; img.data[o + 1] = gg; img.data[o + 2] = b; img.data[o + 3] = 255;
    }
  }
  g.putImageData(img, c.width - n, 0);
}

function sendPcm(buffer) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const pcm = new Uint8Array(buffer);
  const frame = new Uint8Array(8 + pcm.length);
  frame.set([0x4b, 0x57, 0x53, 0x31]); // "KWS1"
  const seq = state.seq++;
  new DataView(frame.buffer).setUint32(4, seq, true);
  frame.set(pcm, 8);
  state.sentAt.set(seq, performance.now());
  if (state.sentAt.size > 500) state.sentAt.delete(state.sentAt.keys().next().value);
  state.ws.send(frame.buffer);
}

function begin(source) {
  stopSource(true);
  state.source = source;
  state.history = [];
  state.capture = { start: null, offset: Infinity, startCtx: null };
  state.detectionLatencies = [];
  state.ws.send(JSON.stringify({ type: "start", sample_rate: state.rate }));
  $("stop").disabled = false;
}

function stopSource(tell) {
  if (state.stopSource) state.stopSource();
  state.stopSource = null;
  $("stop").disabled = true;
  if (state.hello && state.ws && state.ws.readyState === WebSocket.OPEN) $("mic").disabled = false;
  if (tell && state.ws && state.ws.readyState === WebSocket.OPEN && state.source) {
    state.ws.send(JSON.stringify({ type: "stop" }));
  }
  state.source = null;
}

async function startMic() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/static/worklet.js");
    const node = new AudioWorkletNode(ctx, "kws-capture", {
      processorOptions: { targetRate: state.rate, chunkSamples: Math.round((state.rate * CHUNK_MS) / 1000) },
    });
    begin("microphone");
    $("mic").disabled = true;
    node.port.onmessage = (ev) => onCaptured(ev.data);
    ctx.createMediaStreamSource(stream).connect(node);
    state.stopSource = () => {
      node.port.onmessage = null;
      stream.getTracks().forEach((t) => t.stop());
      ctx.close();
    };
  } catch (e) {
    showError(`microphone: ${e.message || e}`);
  }
}

// A chunk from the worklet: `end` is the AudioContext time (s) of its last sample. The audio
// clock is tied to performance.now() by the smallest (arrival - end) seen: no chunk arrives
// before it was captured, so the fastest hand-over is the clocks' offset (the audio is then
// counted as captured when the audio graph delivered it; the device's own input buffering
// before that is not seen by the page).
function onCaptured({ pcm, end }) {
  const cap = state.capture;
  cap.offset = Math.min(cap.offset, performance.now() - end * 1000);
  if (cap.startCtx === null) cap.startCtx = end - pcm.byteLength / 2 / state.rate;
  cap.start = cap.offset + cap.startCtx * 1000;
  sendPcm(pcm);
}

async function playFile(file) {
  try {
    const bytes = await file.arrayBuffer();
    const decoded = await new AudioContext().decodeAudioData(bytes);
    // The browser's own resampler: render the file into a mono context at the model's rate.
    const length = Math.ceil(decoded.duration * state.rate);
    const off = new OfflineAudioContext(1, length, state.rate);
    const src = off.createBufferSource();
    src.buffer = decoded;
    src.connect(off.destination);
    src.start();
    const samples = (await off.startRendering()).getChannelData(0);
    begin(`file ${file.name}`);
    const chunk = Math.round((state.rate * CHUNK_MS) / 1000);
    const t0 = performance.now();
    state.capture.start = t0; // a file plays as if captured in real time from now
    let i = 0;
    const timer = setInterval(() => {
      // real-time pacing: send every chunk whose time has come
      while (i < samples.length && (i / state.rate) * 1000 <= performance.now() - t0) {
        const part = samples.subarray(i, i + chunk), out = new Int16Array(part.length);
        for (let k = 0; k < part.length; k++) out[k] = Math.round(Math.max(-1, Math.min(1, part[k])) * 32767);
        sendPcm(out.buffer);
        i += chunk;
      }
      if (i >= samples.length) { clearInterval(timer); setStatus(`done: ${file.name}`, "idle"); }
    }, CHUNK_MS / 2);
    state.stopSource = () => clearInterval(timer);
  } catch (e) {
    showError(`${file.name}: not a playable audio file (${e.message || e})`);
  }
}

$("mic").onclick = startMic;
$("stop").onclick = () => { stopSource(true); setStatus("connected", "idle"); };
$("file").onchange = (ev) => { if (ev.target.files[0]) playFile(ev.target.files[0]); };
const drop = $("drop");
drop.ondragover = (ev) => { ev.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  if (ev.dataTransfer.files[0]) playFile(ev.dataTransfer.files[0]);
};
$("settings").onsubmit = (ev) => {
  ev.preventDefault();
  const settings = {};
  for (const el of ev.target.elements) {
    if (!el.name) continue;
    if (el.value === "" || Number.isNaN(Number(el.value))) {
      showError(`${el.name}: enter a number`);
      return;
    }
    settings[el.name] = Number(el.value);
  }
  state.ws.send(JSON.stringify({ type: "settings", settings }));
};
connect();
