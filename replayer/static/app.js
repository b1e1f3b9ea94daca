// ticktape live dashboard: pick a log, play it at a speed, watch price and SMA draw live.
// Updates are coalesced to at most one Plotly.extendTraces per animation frame.
"use strict";
(() => {
  const MAX_POINTS = 3000; // visible window per trace
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), symbol: $("symbol"), speed: $("speed"), sma: $("sma"), play: $("play"),
    seek: $("seek"), conn: $("conn"), message: $("message"), price: $("r-price"),
    smaOut: $("r-sma"), rate: $("r-rate"), clock: $("r-clock"), late: $("r-late"),
    seq: $("r-seq"), stateOut: $("r-state"),
  };
  // Everything the page knows; exposed for the browser tests.
  const state = {
    info: null, subscribed: false, playing: false, ended: false, connected: false,
    lastSeq: null, gaps: 0, received: 0, points: 0, clockTs: null, anchor: null,
    expectJump: true, dragging: false, seekSeq: null, seekId: 0, lateMs: null, reconnects: 0, status: "idle",
    lastPrice: null, lastSma: null, arrivals: [], pending: { x: [], price: [], sma: [] },
    framePending: false,
  };
  window.__ticktape = state;

  const authHeaders = token ? { Authorization: `Bearer ${token}` } : {};
  const fetchJSON = async (path) => {
    const response = await fetch(path, { headers: authHeaders });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  };
  const iso = (ns) => (ns === null || ns === undefined ? "–"
    : new Date(Number(ns) / 1e6).toISOString().replace("T", " ").replace("Z", ""));
  const fmt = (v) => (v === null || v === undefined ? "–"
    : Number(v).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const showError = (text) => { ui.message.textContent = text || ""; };
  const setConn = (text, cls) => { ui.conn.textContent = text; ui.conn.className = `pill ${cls}`; };
  const speedValue = () => (ui.speed.value === "max" ? "max" : Number(ui.speed.value));

  // -- chart --------------------------------------------------------------------------------
  const layout = {
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: "#e2e8f0" }, margin: { l: 64, r: 16, t: 16, b: 40 },
    xaxis: { type: "date", gridcolor: "#1e293b" }, yaxis: { gridcolor: "#1e293b", tickformat: ",.2f" },
    legend: { orientation: "h", x: 0, y: 1.08 }, uirevision: "keep",
  };
  const traces = () => [
    { x: [], y: [], name: "price", mode: "lines", line: { width: 1.5, color: "#60a5fa" } },
    { x: [], y: [], name: "SMA", mode: "lines", line: { width: 1.5, color: "#f59e0b" } },
  ];
  Plotly.newPlot("chart", traces(), layout, { responsive: true, displaylogo: false });
  const resetChart = () => {
    state.points = 0;
    state.pending = { x: [], price: [], sma: [] };
    Plotly.react("chart", traces(), layout, { responsive: true, displaylogo: false });
  };

  function drawFrame() {
    state.framePending = false;
    const p = state.pending;
    if (p.x.length) {
      Plotly.extendTraces("chart", { x: [p.x, p.x], y: [p.price, p.sma] }, [0, 1], MAX_POINTS);
      state.points += p.x.length;
      state.pending = { x: [], price: [], sma: [] };
    }
    ui.price.textContent = fmt(state.lastPrice);
    ui.smaOut.textContent = fmt(state.lastSma);
    ui.clock.textContent = iso(state.clockTs);
    ui.seq.textContent = state.lastSeq === null ? "–" : state.lastSeq.toLocaleString();
    ui.late.textContent = state.lateMs === null ? "–" : `${state.lateMs.toFixed(1)} ms`;
    if (!state.dragging && state.seekSeq === null && state.info && state.clockTs !== null) {
      const span = state.info.last_ts_ns - state.info.first_ts_ns || 1;
      ui.seek.value = String(Math.round(((state.clockTs - state.info.first_ts_ns) / span) * 1000));
    }
  }
  const scheduleFrame = () => {
    if (!state.framePending) { state.framePending = true; requestAnimationFrame(drawFrame); }
  };

  setInterval(() => { // ticks per second over the last second
    const now = performance.now();
    state.arrivals = state.arrivals.filter(([t]) => now - t <= 1000);
    ui.rate.textContent = state.arrivals.reduce((n, [, k]) => n + k, 0).toLocaleString();
  }, 250);

  // -- socket ---------------------------------------------------------------------------------
  const socket = io({ transports: ["websocket", "polling"], auth: token ? { token } : undefined });
  socket.on("connect", () => {
    state.connected = true;
    setConn("connected", "pill-on");
    showError("");
    // After a reconnect, carry on right after the last tick held: no gap, no repeat.
    if (state.subscribed && !state.ended) subscribe(state.lastSeq === null ? 0 : state.lastSeq + 1, false);
  });
  socket.on("disconnect", () => { state.connected = false; setConn("reconnecting…", "pill-wait"); });
  socket.on("connect_error", (err) => { setConn("offline", "pill-off"); showError(`connection: ${err.message}`); });
  socket.io.on("reconnect", () => { state.reconnects += 1; });

  socket.on("ticks", (batch) => {
    const n = batch.seq.length;
    if (!n) return;
    // After a seek, ticks still in flight from the old position are dropped: the stream
    // continues at the acknowledged seq (-1 while the acknowledgement is on its way).
    if (state.seekSeq !== null) {
      if (batch.seq[0] !== state.seekSeq) return;
      state.seekSeq = null;
    }
    if (state.lastSeq !== null && !state.expectJump && batch.seq[0] !== state.lastSeq + 1) state.gaps += 1;
    state.expectJump = false;
    state.lastSeq = batch.seq[n - 1];
    state.received += n;
    const now = performance.now();
    state.arrivals.push([now, n]);
    const speed = speedValue();
    if (!state.anchor) state.anchor = { wall: now, ts: batch.ts[0] };
    state.lateMs = speed === "max" ? null
      : Math.max(0, (now - state.anchor.wall) - (batch.ts[0] - state.anchor.ts) / 1e6 / speed);
    const symbol = ui.symbol.value;
    const p = state.pending;
    for (let i = 0; i < n; i += 1) {
      if (batch.symbol[i] !== symbol) continue;
      p.x.push(batch.ts[i] / 1e6);
      p.price.push(batch.price[i]);
      p.sma.push(batch.sma[i]);
      state.lastPrice = batch.price[i];
      state.lastSma = batch.sma[i];
    }
    state.clockTs = batch.ts[n - 1];
    scheduleFrame();
  });
  socket.on("status", (s) => {
    state.status = s.state;
    if (state.seekSeq !== null && state.seekSeq >= 0 && s.seq === state.seekSeq && s.state === "ended") {
      state.seekSeq = null; // sought to the very end: nothing more will arrive
    }
    ui.stateOut.textContent = s.reason ? `${s.state} (${s.reason})` : s.state;
    if (s.clock !== null && s.clock !== undefined) state.clockTs = s.clock;
    if (s.state === "ended") { state.ended = true; state.playing = false; }
    updatePlay();
    scheduleFrame();
  });
  socket.on("end", () => { state.ended = true; state.playing = false; updatePlay(); });

  function subscribe(fromSeq, fresh) {
    if (fresh) { resetChart(); state.lastSeq = null; state.expectJump = true; }
    state.anchor = null;
    const payload = { log: ui.log.value, speed: speedValue(), from_seq: fromSeq, sma: Number(ui.sma.value) || 5 };
    return new Promise((resolve) => {
      socket.emit("subscribe", payload, (ack) => {
        if (!ack.ok) { showError(ack.error.message); state.subscribed = false; resolve(false); return; }
        showError("");
        state.subscribed = true; state.playing = true; state.ended = false;
        updatePlay();
        resolve(true);
      });
    });
  }
  const control = (payload) => new Promise((resolve) => {
    socket.emit("control", payload, (ack) => { if (!ack.ok) showError(ack.error.message); resolve(ack); });
  });

  function updatePlay() {
    ui.play.textContent = state.playing ? "❚❚ Pause" : "▶ Play";
    ui.play.setAttribute("aria-label", state.playing ? "Pause (space)" : "Play (space)");
  }

  async function togglePlay() {
    if (!state.subscribed || state.ended) {
      await subscribe(0, true);
    } else if (state.playing) {
      state.playing = false; updatePlay();
      await control({ action: "pause" });
    } else {
      state.playing = true; state.anchor = null; updatePlay();
      await control({ action: "resume" });
    }
  }

  // -- controls -------------------------------------------------------------------------------
  ui.play.addEventListener("click", togglePlay);
  document.addEventListener("keydown", (e) => {
    const tag = (e.target && e.target.tagName) || "";
    if (e.code === "Space" && !["INPUT", "SELECT", "BUTTON", "TEXTAREA"].includes(tag)) {
      e.preventDefault();
      togglePlay();
    }
  });
  ui.speed.addEventListener("change", async () => {
    state.anchor = null;
    if (state.subscribed) await control({ action: "speed", speed: speedValue() });
  });
  ui.symbol.addEventListener("change", () => { resetChart(); state.lastPrice = null; state.lastSma = null; scheduleFrame(); });
  ui.sma.addEventListener("change", () => {
    if (state.subscribed && !state.ended) {
      const from = state.lastSeq === null ? 0 : state.lastSeq + 1;
      subscribe(from, true);
    }
  });
  const seekTargetNs = () => {
    const span = state.info.last_ts_ns - state.info.first_ts_ns;
    return state.info.first_ts_ns + Math.round((Number(ui.seek.value) / 1000) * span);
  };
  ui.seek.addEventListener("input", () => {
    if (!state.info) return;
    state.dragging = true;
    ui.clock.textContent = iso(seekTargetNs());
  });
  ui.seek.addEventListener("change", async () => {
    if (!state.info) return;
    const target = new Date(seekTargetNs() / 1e6).toISOString();
    state.dragging = false;
    if (!state.subscribed || state.ended) await subscribe(0, true);
    resetChart();
    state.expectJump = true;
    state.anchor = null;
    state.clockTs = seekTargetNs();
    state.seekSeq = -1;
    const id = ++state.seekId; // only the latest of several quick seeks counts
    const ack = await control({ action: "seek", ts: target });
    if (id === state.seekId) state.seekSeq = ack.ok ? ack.seq : null;
    scheduleFrame();
  });
  ui.log.addEventListener("change", () => selectLog(ui.log.value));

  async function selectLog(name) {
    if (state.subscribed) socket.emit("unsubscribe", {});
    state.subscribed = false; state.playing = false; state.ended = false;
    state.lastSeq = null; state.clockTs = null; state.lastPrice = null; state.lastSma = null;
    updatePlay();
    resetChart();
    try {
      state.info = await fetchJSON(`/api/logs/${encodeURIComponent(name)}`);
    } catch (err) { showError(String(err)); return; }
    ui.symbol.replaceChildren(...state.info.symbols.map((s) => new Option(s, s)));
    ui.seek.value = "0";
    state.clockTs = state.info.first_ts_ns;
    ui.stateOut.textContent = "ready";
    scheduleFrame();
  }

  async function loadLogs() {
    let logs;
    try { logs = await fetchJSON("/api/logs"); } catch (err) { showError(String(err)); return; }
    const usable = logs.filter((l) => !l.error);
    ui.log.replaceChildren(...logs.map((l) => {
      const option = new Option(l.error ? `${l.name} (unavailable)` : `${l.name} (${l.events.toLocaleString()} ticks)`, l.name);
      option.disabled = Boolean(l.error);
      return option;
    }));
    if (!usable.length) { showError("no logs are served"); return; }
    const wanted = params.get("log");
    ui.log.value = usable.some((l) => l.name === wanted) ? wanted : usable[0].name;
    await selectLog(ui.log.value);
    if (params.get("speed")) ui.speed.value = params.get("speed");
    if (params.get("autoplay")) togglePlay();
  }
  updatePlay();
  loadLogs();
})();
