// ticktape live dashboard: pick a log and symbols, play at a speed, watch price (line or
// candlesticks), SMA, volume and alerts draw live; an overview of the whole log to seek in.
// Ticks only go into buffers; the charts are redrawn at most once per animation frame, one
// Plotly.react per chart that changed. The view's state lives in the URL (history.replaceState).
"use strict";
(() => {
  const MAX_POINTS = 3000; // ticks kept per symbol (line mode, and to rebuild bars)
  const MAX_BARS = 150; // bars kept per symbol (each bar is an SVG path: they cost the most to draw)
  const MAX_ALERTS = 100; // rows in the alert list
  const MAX_MARKERS = 200; // alert markers per chart
  const OVERVIEW_BUCKETS = 800;
  const OVERVIEW_MARGIN = { l: 8, r: 8, t: 4, b: 20 };
  const INTERVALS = { "1s": 1e3, "5s": 5e3, "1m": 60e3, "5m": 300e3, "1h": 3600e3 }; // ms
  const MODES = ["line", "candles"];
  const COLORS = { price: "#60a5fa", sma: "#f59e0b", buy: "#22c55e", sell: "#ef4444", alert: "#e879f9" };
  const PALETTE = ["#60a5fa", "#f472b6", "#34d399", "#fbbf24", "#a78bfa", "#f87171", "#2dd4bf", "#fb923c"];
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), speed: $("speed"), sma: $("sma"), interval: $("interval"), play: $("play"),
    seek: $("seek"), symbols: $("symbols"), conn: $("conn"), message: $("message"), behind: $("behind"),
    price: $("r-price"), smaOut: $("r-sma"), rate: $("r-rate"), clock: $("r-clock"), late: $("r-late"),
    lag: $("r-lag"), eff: $("r-eff"), seq: $("r-seq"), stateOut: $("r-state"), charts: $("charts"),
    overview: $("overview"), overviewNote: $("overview-note"), alertsPanel: $("alerts-panel"),
    alertList: $("alerts"), alertsEmpty: $("alerts-empty"), alertsCount: $("alerts-count"),
  };
  const SPEEDS = [...ui.speed.options].map((o) => o.value);

  // Everything the page knows; exposed for the browser tests.
  const state = {
    info: null, subscribed: false, playing: false, ended: false, connected: false,
    lastSeq: null, gaps: 0, received: 0, points: 0, clockTs: null, anchor: null,
    expectJump: true, dragging: false, seekSeq: null, seekId: 0, lateMs: null, lagMs: null,
    effective: null, speedSamples: [], reconnects: 0, status: "idle", statusSpeed: null,
    lastPrice: null, lastSma: null, arrivals: [], framePending: false, frames: 0,
    alerts: null, // null: not known yet; true/false: whether the server sends `alert`
    alertLog: [], filtered: false, awaitingAck: false, seekTargetNs: null, seekAck: null, firstAfterSeek: null,
    drawMs: 0, overview: null, charts: new Map(), mode: "line", interval: "1s", symbols: [], chartRev: 0,
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
  const fmtSpeed = (v) => (v >= 100 ? Math.round(v).toLocaleString() : v.toPrecision(2)) + "×";
  const showError = (text) => { ui.message.textContent = text || ""; };
  const setConn = (text, cls) => { ui.conn.textContent = text; ui.conn.className = `pill ${cls}`; };
  const speedValue = () => (ui.speed.value === "max" ? "max" : Number(ui.speed.value));
  const smaValue = () => {
    const n = Math.round(Number(ui.sma.value));
    return Number.isFinite(n) && n >= 1 && n <= 10000 ? n : 5;
  };
  // An alert's time: `ts_ns` when the server sends it, else `ts` as integer ns like ticks' or
  // ISO 8601 (nanosecond digits cut to ms for Date).
  const alertMs = (ts) => {
    if (typeof ts === "number") return ts / 1e6;
    if (typeof ts === "string") return Date.parse(ts.replace(/(\.\d{3})\d+/, "$1"));
    return NaN;
  };

  // -- URL state -------------------------------------------------------------------------------
  function updateURL() {
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (ui.log.value) q.set("log", ui.log.value);
    q.set("speed", ui.speed.value);
    if (state.info && state.symbols.length && state.symbols.length < state.info.symbols.length) {
      q.set("symbols", state.symbols.join(","));
    }
    q.set("interval", state.interval);
    q.set("mode", state.mode);
    q.set("sma", String(smaValue()));
    history.replaceState(null, "", `${location.pathname}?${q}`);
  }

  // -- one chart per symbol ----------------------------------------------------------------------
  const baseLayout = () => ({
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: "#e2e8f0", size: 11 }, margin: { l: 60, r: 10, t: 6, b: 26 },
    showlegend: false, barmode: "stack", bargap: 0.15, hovermode: "closest",
    xaxis: { type: "date", gridcolor: "#1e293b", anchor: "y2", rangeslider: { visible: false } },
    yaxis: { domain: [0.3, 1], gridcolor: "#1e293b", tickformat: ",.2f" },
    yaxis2: { domain: [0, 0.24], gridcolor: "#1e293b", title: { text: "vol", standoff: 4 } },
  });
  const plotConfig = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };

  const firstAtOrAfter = (sorted, value) => {
    let lo = 0; let hi = sorted.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid] < value) lo = mid + 1; else hi = mid; }
    return lo;
  };

  class SymbolChart {
    constructor(symbol, index) {
      this.symbol = symbol;
      this.card = document.createElement("section");
      this.card.className = "chart-card";
      this.card.dataset.symbol = symbol;
      const head = document.createElement("h2");
      head.className = "chart-head";
      this.title = document.createElement("span");
      this.title.textContent = symbol;
      this.last = document.createElement("span");
      this.last.className = "chart-last";
      head.append(this.title, this.last);
      this.div = document.createElement("div");
      // The first chart keeps the id the dashboard always had (links, the wheel's test).
      this.div.id = index === 0 ? "chart" : `chart-${index}`;
      this.div.className = "chart";
      this.div.setAttribute("role", "img");
      this.div.setAttribute("aria-label", `${symbol}: price, SMA and volume`);
      this.card.append(head, this.div);
      ui.charts.append(this.card);
      this.reset();
      Plotly.newPlot(this.div, [], baseLayout(), plotConfig);
      this.resizer = new ResizeObserver(() => { this.dirty = true; this.resize = true; scheduleFrame(); });
      this.resizer.observe(this.div);
    }

    reset() {
      this.pts = { x: [], price: [], sma: [], size: [], side: [], seq: [] };
      this.bars = [];
      this.marks = { x: [], y: [], text: [] };
      this.lastPrice = null;
      this.lastSma = null;
      this.dirty = true;
    }

    add(tsNs, price, sma, size, side, seq) {
      const ms = tsNs / 1e6;
      const p = this.pts;
      p.x.push(ms); p.price.push(price); p.sma.push(sma); p.size.push(size); p.side.push(side); p.seq.push(seq);
      this.addBar(ms, price, size, side);
      this.lastPrice = price;
      this.lastSma = sma;
      this.dirty = true;
    }

    addBar(ms, price, size, side) {
      const width = INTERVALS[state.interval];
      const t = Math.floor(ms / width) * width;
      let bar = this.bars[this.bars.length - 1];
      if (!bar || bar.t !== t) {
        if (bar && t < bar.t) return; // out of order (cannot happen within a stream)
        bar = { t, o: price, h: price, l: price, c: price, buy: 0, sell: 0 };
        this.bars.push(bar);
      }
      bar.h = Math.max(bar.h, price);
      bar.l = Math.min(bar.l, price);
      bar.c = price;
      if (side === "sell") bar.sell += size; else bar.buy += size;
    }

    rebuildBars() {
      this.bars = [];
      const p = this.pts;
      for (let i = 0; i < p.x.length; i += 1) this.addBar(p.x[i], p.price[i], p.size[i], p.side[i]);
      this.dirty = true;
    }

    // The price of the tick with this seq if it is still held, else the latest price.
    priceAt(seq) {
      const i = firstAtOrAfter(this.pts.seq, seq);
      return this.pts.seq[i] === seq ? this.pts.price[i] : this.lastPrice;
    }

    mark(ms, price, text) {
      const m = this.marks;
      m.x.push(ms); m.y.push(price); m.text.push(text);
      if (m.x.length > MAX_MARKERS) { m.x.shift(); m.y.shift(); m.text.shift(); }
      this.dirty = true;
    }

    trim() {
      const p = this.pts;
      const extra = p.x.length - MAX_POINTS;
      if (extra > 0) for (const k of Object.keys(p)) p[k].splice(0, extra);
      if (this.bars.length > MAX_BARS) this.bars.splice(0, this.bars.length - MAX_BARS);
    }

    draw() {
      this.trim();
      const width = INTERVALS[state.interval];
      let p = this.pts;
      let bars = this.bars;
      if (p.x.length && bars.length) {
        // Lines and bars over the same span: in line mode the later start of the ticks and
        // the bars held; with candles, the bars' (at a coarse interval they reach further back).
        const start = state.mode === "line" ? Math.max(p.x[0], bars[0].t) : bars[0].t;
        if (state.mode === "line") bars = bars.filter((b) => b.t + width > start);
        const i = firstAtOrAfter(p.x, start);
        if (i > 0) p = { x: p.x.slice(i), price: p.price.slice(i), sma: p.sma.slice(i) };
      }
      const bx = bars.map((b) => b.t + width / 2);
      // Markers only where the chart has data: an old one would stretch the time axis.
      const since = Math.min(p.x.length ? p.x[0] : Infinity, bars.length ? bars[0].t : Infinity);
      const m = this.marks;
      const k = firstAtOrAfter(m.x, since);
      const marks = k === 0 ? m : { x: m.x.slice(k), y: m.y.slice(k), text: m.text.slice(k) };
      const price = state.mode === "candles"
        ? { type: "candlestick", name: "price", x: bx, open: bars.map((b) => b.o),
            high: bars.map((b) => b.h), low: bars.map((b) => b.l), close: bars.map((b) => b.c),
            increasing: { line: { color: COLORS.buy } }, decreasing: { line: { color: COLORS.sell } } }
        : { type: "scatter", name: "price", mode: "lines", x: p.x, y: p.price,
            line: { width: 1.5, color: COLORS.price } };
      const barWidth = width * 0.8;
      const traces = [
        price,
        { type: "scatter", name: `SMA ${smaValue()}`, mode: "lines", x: p.x, y: p.sma,
          line: { width: 1.5, color: COLORS.sma }, connectgaps: false },
        { type: "bar", name: "buy volume", x: bx, y: bars.map((b) => b.buy), yaxis: "y2",
          width: barWidth, marker: { color: COLORS.buy } },
        { type: "bar", name: "sell volume", x: bx, y: bars.map((b) => b.sell), yaxis: "y2",
          width: barWidth, marker: { color: COLORS.sell } },
        { type: "scatter", name: "alerts", mode: "markers", x: marks.x, y: marks.y,
          text: marks.text, hoverinfo: "text",
          marker: { symbol: "diamond", size: 11, color: COLORS.alert, line: { color: "#fff", width: 1 } } },
      ];
      const layout = baseLayout();
      layout.uirevision = `${ui.log.value}:${state.chartRev}`; // a user's zoom survives redraws
      Plotly.react(this.div, traces, layout);
      if (this.resize) { this.resize = false; Plotly.Plots.resize(this.div); }
      this.last.textContent = this.lastPrice === null ? "" : `${fmt(this.lastPrice)}  SMA ${fmt(this.lastSma)}`;
      this.dirty = false;
    }

    destroy() {
      this.resizer.disconnect();
      Plotly.purge(this.div);
      this.card.remove();
    }
  }

  function buildCharts() {
    for (const chart of state.charts.values()) chart.destroy();
    state.charts = new Map(state.symbols.map((s, i) => [s, new SymbolChart(s, i)]));
    ui.charts.dataset.count = String(state.charts.size);
    state.points = 0;
    state.lastPrice = null;
    state.lastSma = null;
    scheduleFrame();
  }
  function resetCharts() {
    state.chartRev += 1;
    state.points = 0;
    for (const chart of state.charts.values()) chart.reset();
    scheduleFrame();
  }

  // -- overview strip ------------------------------------------------------------------------------
  function drawOverview() {
    const ov = state.overview;
    if (!ov || !state.info) { Plotly.purge(ui.overview); return; }
    const names = Object.keys(ov.symbols);
    const several = names.length > 1;
    const traces = names.map((name, i) => {
      const s = ov.symbols[name];
      const base = s.price[0] || 1;
      const shown = state.symbols.includes(name);
      return {
        type: "scatter", mode: "lines", name, x: s.ts.map((t) => t / 1e6),
        // Several symbols share one strip as % change from their first price.
        y: several ? s.price.map((p) => (p / base - 1) * 100) : s.price,
        line: { width: shown ? 1.4 : 0.8, color: PALETTE[i % PALETTE.length] }, opacity: shown ? 1 : 0.35,
        hoverinfo: "skip",
      };
    });
    const first = state.info.first_ts_ns / 1e6;
    const last = Math.max(state.info.last_ts_ns / 1e6, first + 1);
    const at = (state.clockTs ?? state.info.first_ts_ns) / 1e6;
    Plotly.react(ui.overview, traces, {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: "#94a3b8", size: 10 },
      margin: OVERVIEW_MARGIN, showlegend: false, dragmode: false, hovermode: false,
      xaxis: { type: "date", range: [first, last], fixedrange: true, automargin: false, gridcolor: "#1e293b" },
      yaxis: { fixedrange: true, automargin: false, showticklabels: false, gridcolor: "#1e293b" },
      shapes: [{ type: "line", xref: "x", yref: "paper", x0: at, x1: at, y0: 0, y1: 1,
                 line: { color: COLORS.sma, width: 2 } }],
    }, { staticPlot: false, displayModeBar: false, responsive: true });
    ui.overviewNote.textContent = several ? "% change per symbol" : "";
  }
  let overviewCursorAt = 0;
  function moveOverviewCursor(now) {
    if (!state.overview || !ui.overview.data || now - overviewCursorAt < 250) return;
    overviewCursorAt = now;
    const at = (state.seekTargetNs ?? state.clockTs ?? state.info.first_ts_ns) / 1e6;
    Plotly.relayout(ui.overview, { "shapes[0].x0": at, "shapes[0].x1": at });
  }
  // Where a click lands in the overview's plot area, as event time (ns), or null outside it.
  function overviewTsAt(clientX) {
    const rect = ui.overview.getBoundingClientRect();
    const width = rect.width - OVERVIEW_MARGIN.l - OVERVIEW_MARGIN.r;
    const frac = (clientX - rect.left - OVERVIEW_MARGIN.l) / width;
    if (!state.info || width <= 0 || frac < -0.02 || frac > 1.02) return null;
    const span = state.info.last_ts_ns - state.info.first_ts_ns;
    return state.info.first_ts_ns + Math.round(Math.min(1, Math.max(0, frac)) * span);
  }
  ui.overview.addEventListener("click", (e) => {
    const ts = overviewTsAt(e.clientX);
    if (ts !== null) seekTo({ ts });
  });
  async function loadOverview(name) {
    state.overview = null;
    try {
      const ov = await fetchJSON(`/api/logs/${encodeURIComponent(name)}/overview?buckets=${OVERVIEW_BUCKETS}`);
      if (name !== ui.log.value) return;
      state.overview = ov;
    } catch (err) { showError(String(err)); }
    drawOverview();
  }

  // -- alerts --------------------------------------------------------------------------------------
  function setAlertsSupported(supported) {
    state.alerts = supported;
    ui.alertsPanel.hidden = !supported;
    ui.charts.parentElement.classList.toggle("with-alerts", supported);
  }
  function addAlert(a) {
    const ms = alertMs(typeof a.ts_ns === "number" ? a.ts_ns : a.ts);
    const chart = state.charts.get(a.symbol);
    const price = chart ? chart.priceAt(a.seq) : null;
    const when = Number.isFinite(ms) ? new Date(ms).toISOString().slice(11, 23) : String(a.ts);
    if (chart && price !== null && Number.isFinite(ms)) chart.mark(ms, price, `${a.rule}: ${a.message}`);
    // Seeking back replays an alert already listed: it gets its marker again, not a second row.
    if (state.alertLog.some((b) => b.seq === a.seq && b.rule === a.rule && b.symbol === a.symbol)) {
      scheduleFrame();
      return;
    }
    state.alertLog.unshift({ ...a, ms, price });
    if (state.alertLog.length > MAX_ALERTS) state.alertLog.length = MAX_ALERTS;
    const row = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "alert-row";
    button.dataset.seq = String(a.seq);
    button.dataset.rule = String(a.rule);
    button.title = `seek to seq ${a.seq}`;
    const head = document.createElement("span");
    head.className = "alert-head";
    const rule = document.createElement("b");
    rule.textContent = a.rule;
    const sym = document.createElement("span");
    sym.textContent = a.symbol;
    const time = document.createElement("time");
    time.textContent = when;
    head.append(rule, sym, time);
    const msg = document.createElement("span");
    msg.className = "alert-msg";
    msg.textContent = a.message;
    button.append(head, msg);
    button.addEventListener("click", () => seekTo({ seq: a.seq }));
    row.append(button);
    ui.alertList.prepend(row); // newest first
    while (ui.alertList.children.length > MAX_ALERTS) ui.alertList.lastElementChild.remove();
    ui.alertsEmpty.hidden = true;
    ui.alertsCount.textContent = `(${state.alertLog.length}${state.alertLog.length >= MAX_ALERTS ? "+" : ""})`;
    scheduleFrame();
  }
  function clearAlerts() {
    state.alertLog = [];
    ui.alertList.replaceChildren();
    ui.alertsEmpty.hidden = false;
    ui.alertsCount.textContent = "";
  }

  // -- drawing ---------------------------------------------------------------------------------------
  // One redraw pass per animation frame. A chart costs Plotly tens of ms to draw, so with
  // several symbols a frame draws charts (round robin) only until its budget is spent and
  // leaves the rest to the next frame: socket messages and keys are never held up for long.
  const FRAME_BUDGET_MS = 12;
  let nextChart = 0;
  function drawFrame(now) {
    state.framePending = false;
    state.frames += 1;
    const charts = [...state.charts.values()];
    const start = performance.now();
    let drawn = 0;
    for (let k = 0; k < charts.length; k += 1) {
      const i = (nextChart + k) % charts.length;
      if (!charts[i].dirty) continue;
      if (drawn && performance.now() - start > FRAME_BUDGET_MS) { nextChart = i; break; }
      charts[i].draw();
      drawn += 1;
    }
    state.drawMs = performance.now() - start;
    if (charts.some((c) => c.dirty)) scheduleFrame();
    const primary = state.charts.values().next().value;
    state.lastPrice = primary ? primary.lastPrice : null;
    state.lastSma = primary ? primary.lastSma : null;
    ui.price.textContent = fmt(state.lastPrice);
    ui.smaOut.textContent = fmt(state.lastSma);
    ui.clock.textContent = iso(state.seekTargetNs ?? state.clockTs);
    ui.seq.textContent = state.lastSeq === null ? "–" : state.lastSeq.toLocaleString();
    if (!state.dragging && state.seekSeq === null && state.info && state.clockTs !== null) {
      const span = state.info.last_ts_ns - state.info.first_ts_ns || 1;
      ui.seek.value = String(Math.round(((state.clockTs - state.info.first_ts_ns) / span) * 1000));
    }
    moveOverviewCursor(now);
  }
  function scheduleFrame() {
    if (!state.framePending) { state.framePending = true; requestAnimationFrame(drawFrame); }
  }

  // -- fidelity: lateness, server lag, effective speed -------------------------------------------------
  function resetFidelity() {
    state.anchor = null;
    state.speedSamples = [];
    state.effective = null;
    state.lateMs = null;
  }
  function updateFidelity() {
    const now = performance.now();
    state.arrivals = state.arrivals.filter(([t]) => now - t <= 1000);
    ui.rate.textContent = state.arrivals.reduce((n, [, k]) => n + k, 0).toLocaleString();
    // Event time advanced per wall second over the last ~2 s of batches, smoothed.
    const samples = state.speedSamples.filter(([t]) => now - t <= 2000);
    state.speedSamples = samples;
    if (!state.playing) {
      state.effective = null;
    } else if (samples.length >= 2 && samples[samples.length - 1][0] - samples[0][0] >= 500) {
      const [w0, t0] = samples[0];
      const [w1, t1] = samples[samples.length - 1];
      const measured = (t1 - t0) / 1e6 / (w1 - w0);
      state.effective = state.effective === null ? measured : 0.6 * state.effective + 0.4 * measured;
    }
    const requested = speedValue();
    const slow = state.playing && requested !== "max" && state.effective !== null
      && state.effective < 0.9 * requested;
    ui.late.textContent = state.lateMs === null ? "–" : `${state.lateMs.toFixed(0)} ms`;
    ui.lag.textContent = state.lagMs === null || state.lagMs === undefined ? "–" : `${Math.round(state.lagMs)} ms`;
    ui.eff.textContent = state.effective === null ? "–" : fmtSpeed(state.effective);
    $("fid-eff").classList.toggle("warn", slow);
    $("fid-late").classList.toggle("warn", state.playing && (state.lateMs ?? 0) > 1000);
    $("fid-lag").classList.toggle("warn", (state.lagMs ?? 0) > 1000);
    ui.behind.hidden = !slow;
    if (slow) ui.behind.textContent = `behind: ${fmtSpeed(state.effective)} of ${fmtSpeed(requested)}`;
  }
  setInterval(updateFidelity, 250);

  // -- socket --------------------------------------------------------------------------------------
  const socket = io({ transports: ["websocket"], auth: token ? { token } : undefined });
  socket.on("connect", () => {
    state.connected = true;
    setConn("connected", "pill-on");
    showError("");
    // After a reconnect, carry on right after the last tick held: no gap, no repeat.
    if (state.subscribed && !state.ended) subscribe(state.lastSeq === null ? 0 : state.lastSeq + 1, false, false);
  });
  socket.on("disconnect", () => { state.connected = false; setConn("reconnecting…", "pill-wait"); });
  socket.on("connect_error", (err) => { setConn("offline", "pill-off"); showError(`connection: ${err.message}`); });
  socket.io.on("reconnect", () => { state.reconnects += 1; });

  socket.on("ticks", (batch) => {
    const n = batch.seq.length;
    if (!n || batch.log !== ui.log.value) return;
    // A fresh subscribe replaces the stream: batches of the old one still in flight are dropped.
    if (state.awaitingAck) return;
    // After a seek, ticks still in flight from the old position are dropped: the stream
    // continues at the acknowledged seq (-1 while the acknowledgement is on its way).
    if (state.seekSeq !== null) {
      if (state.seekSeq < 0 || (state.filtered ? batch.seq[0] < state.seekSeq : batch.seq[0] !== state.seekSeq)) return;
      state.seekSeq = null;
      state.seekTargetNs = null;
      state.firstAfterSeek = batch.seq[0];
    }
    // Without a symbol filter seqs are contiguous: anything else is a gap.
    if (state.lastSeq !== null && !state.expectJump && !state.filtered && batch.seq[0] !== state.lastSeq + 1) state.gaps += 1;
    state.expectJump = false;
    state.lastSeq = batch.seq[n - 1];
    state.received += n;
    const now = performance.now();
    state.arrivals.push([now, n]);
    const speed = speedValue();
    if (!state.anchor) state.anchor = { wall: now, ts: batch.ts[0] };
    // Lateness: how long after its due time (at this client) the batch arrived.
    state.lateMs = speed === "max" ? null
      : Math.max(0, (now - state.anchor.wall) - (batch.ts[0] - state.anchor.ts) / 1e6 / speed);
    state.speedSamples.push([now, batch.ts[n - 1]]);
    const charts = state.charts;
    const single = charts.size === 1 ? charts.values().next().value : null;
    for (let i = 0; i < n; i += 1) {
      const chart = single && batch.symbol[i] === single.symbol ? single : charts.get(batch.symbol[i]);
      if (!chart) continue;
      chart.add(batch.ts[i], batch.price[i], batch.sma[i], batch.size[i], batch.side[i], batch.seq[i]);
      state.points += 1;
    }
    state.clockTs = batch.ts[n - 1];
    scheduleFrame();
  });
  socket.on("alert", (a) => {
    if (!a || a.log !== ui.log.value || state.awaitingAck || state.seekSeq !== null) return;
    addAlert(a);
  });
  socket.on("status", (s) => {
    if (s.log !== undefined && s.log !== ui.log.value) return;
    state.status = s.state;
    if (s.speed !== undefined) state.statusSpeed = s.speed;
    if (s.lag_ms !== undefined) state.lagMs = s.lag_ms;
    if (state.seekSeq !== null && state.seekSeq >= 0 && s.seq === state.seekSeq && s.state === "ended") {
      state.seekSeq = null; // sought to the very end: nothing more will arrive
      state.seekTargetNs = null;
    }
    ui.stateOut.textContent = s.reason ? `${s.state} (${s.reason})` : s.state;
    if (s.clock !== null && s.clock !== undefined && state.seekSeq === null) state.clockTs = s.clock;
    if (s.state === "ended") { state.ended = true; state.playing = false; }
    if (s.state === "paused") state.playing = false;
    if (s.state === "playing" && state.subscribed) state.playing = true;
    updatePlay();
    scheduleFrame();
  });
  socket.on("end", (e) => {
    if (e && e.log !== undefined && e.log !== ui.log.value) return;
    state.ended = true; state.playing = false; updatePlay();
  });

  const emit = (event, payload) => new Promise((resolve) => { socket.emit(event, payload, resolve); });

  function subscribePayload(fromSeq) {
    const payload = { log: ui.log.value, speed: speedValue(), from_seq: fromSeq, sma: smaValue() };
    if (state.info && state.symbols.length < state.info.symbols.length) payload.symbols = [...state.symbols];
    if (state.alerts !== false) payload.alerts = true;
    return payload;
  }

  // `fresh`: the charts start over. `replacing`: this connection has a stream whose batches
  // may still be in flight; they come before the acknowledgement, and are dropped until it.
  async function subscribe(fromSeq, fresh, replacing = state.subscribed) {
    const wasPaused = state.subscribed && !state.playing && !state.ended;
    if (fresh) { resetCharts(); state.lastSeq = null; state.expectJump = true; }
    resetFidelity();
    state.lagMs = null;
    state.seekSeq = null;
    state.seekTargetNs = null;
    state.awaitingAck = replacing;
    let payload = subscribePayload(fromSeq);
    let ack = await emit("subscribe", payload);
    if (!ack.ok && payload.alerts && ack.error.code === "bad_request" && /alerts/.test(ack.error.message)) {
      setAlertsSupported(false); // a server without alerts: the page works without them
      payload = subscribePayload(fromSeq);
      ack = await emit("subscribe", payload);
    }
    state.awaitingAck = false;
    if (!ack.ok) { showError(ack.error.message); state.subscribed = false; updatePlay(); return false; }
    if (payload.alerts && state.alerts !== true) setAlertsSupported(true);
    state.filtered = payload.symbols !== undefined;
    showError("");
    state.subscribed = true; state.playing = true; state.ended = false;
    updatePlay();
    if (wasPaused) { state.playing = false; updatePlay(); await control({ action: "pause" }); }
    return true;
  }
  const control = async (payload) => {
    const ack = await emit("control", payload);
    if (!ack.ok) showError(ack.error.message);
    return ack;
  };

  function updatePlay() {
    ui.play.textContent = state.playing ? "❚❚ Pause" : "▶ Play";
    ui.play.setAttribute("aria-label", state.playing ? "Pause (space)" : "Play (space)");
  }

  async function togglePlay() {
    if (!state.subscribed || state.ended) {
      await subscribe(0, true);
    } else if (state.playing) {
      state.playing = false; updatePlay();
      resetFidelity();
      await control({ action: "pause" });
    } else {
      state.playing = true; resetFidelity(); updatePlay();
      await control({ action: "resume" });
    }
  }

  // Seek to {seq} or {ts} (ns): the charts restart there; the alert list is kept.
  async function seekTo(target) {
    if (!state.info) return;
    if (!state.subscribed || state.ended) {
      if (target.seq !== undefined) { await subscribe(target.seq, true); return; }
      if (!(await subscribe(0, true))) return;
    }
    resetCharts();
    resetFidelity();
    state.lagMs = null;
    state.expectJump = true;
    state.seekTargetNs = target.ts ?? null;
    state.seekSeq = -1;
    const id = ++state.seekId; // only the latest of several quick seeks counts
    const payload = target.seq !== undefined ? { action: "seek", seq: target.seq }
      : { action: "seek", ts: new Date(target.ts / 1e6).toISOString() };
    const ack = await control(payload);
    if (id === state.seekId) {
      state.seekSeq = ack.ok ? ack.seq : null;
      state.seekAck = ack.ok ? ack.seq : null;
      if (!ack.ok) state.seekTargetNs = null;
    }
    scheduleFrame();
  }
  function seekBy(fraction) {
    if (!state.info) return;
    const { first_ts_ns: first, last_ts_ns: last } = state.info;
    const from = state.seekTargetNs ?? state.clockTs ?? first;
    const ts = Math.min(last, Math.max(first, from + fraction * (last - first)));
    seekTo({ ts });
  }
  async function setSpeed(value) {
    ui.speed.value = value;
    resetFidelity();
    updateURL();
    if (state.subscribed && !state.ended) await control({ action: "speed", speed: speedValue() });
  }
  function stepSpeed(step) {
    const i = SPEEDS.indexOf(ui.speed.value);
    const next = SPEEDS[Math.min(SPEEDS.length - 1, Math.max(0, i + step))];
    if (next !== ui.speed.value) setSpeed(next);
  }
  function setMode(mode) {
    state.mode = mode;
    $(`mode-${mode}`).checked = true;
    for (const chart of state.charts.values()) chart.dirty = true;
    updateURL();
    scheduleFrame();
  }
  function setBarInterval(interval) {
    state.interval = interval;
    ui.interval.value = interval;
    for (const chart of state.charts.values()) chart.rebuildBars();
    updateURL();
    scheduleFrame();
  }

  // -- symbols -----------------------------------------------------------------------------------------
  function renderSymbolPicker() {
    const boxes = state.info.symbols.map((s, i) => {
      const label = document.createElement("label");
      label.className = "chip";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = s;
      box.checked = state.symbols.includes(s);
      box.setAttribute("aria-label", `Show ${s}`);
      box.addEventListener("change", onSymbolsChange);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = PALETTE[i % PALETTE.length];
      const text = document.createElement("span");
      text.textContent = s;
      label.append(box, swatch, text);
      return label;
    });
    const legend = document.createElement("legend");
    legend.textContent = "Symbols";
    ui.symbols.replaceChildren(legend, ...boxes);
  }
  async function onSymbolsChange(e) {
    const chosen = [...ui.symbols.querySelectorAll("input:checked")].map((b) => b.value);
    if (!chosen.length) { e.target.checked = true; return; } // at least one symbol
    state.symbols = state.info.symbols.filter((s) => chosen.includes(s));
    buildCharts();
    drawOverview();
    updateURL();
    if (state.subscribed && !state.ended) await subscribe(state.lastSeq === null ? 0 : state.lastSeq + 1, false);
  }

  // -- controls ------------------------------------------------------------------------------------------
  ui.play.addEventListener("click", togglePlay);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const tag = (t && t.tagName) || "";
    // Form fields keep their own keys (arrows in a select, typing in the SMA box).
    if (["INPUT", "SELECT", "TEXTAREA"].includes(tag) && !["checkbox", "radio"].includes(t.type)) return;
    if (e.key === " " || e.code === "Space") {
      if (tag === "INPUT") return; // a checkbox or radio toggles itself
      // Play/pause even on a focused button (an alert row, Play itself): Enter presses those.
      e.preventDefault();
      if (!e.repeat) togglePlay();
    } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      if (tag === "INPUT") return; // radios move with arrows
      e.preventDefault();
      seekBy((e.key === "ArrowLeft" ? -1 : 1) * (e.shiftKey ? 0.1 : 0.01));
    } else if (e.key === "+" || e.key === "=") {
      e.preventDefault(); stepSpeed(1);
    } else if (e.key === "-" || e.key === "_") {
      e.preventDefault(); stepSpeed(-1);
    } else if (e.key === "c" || e.key === "C") {
      setMode(state.mode === "line" ? "candles" : "line");
    }
  });
  ui.speed.addEventListener("change", () => setSpeed(ui.speed.value));
  ui.interval.addEventListener("change", () => setBarInterval(ui.interval.value));
  for (const mode of MODES) $(`mode-${mode}`).addEventListener("change", () => setMode(mode));
  ui.sma.addEventListener("change", () => {
    ui.sma.value = String(smaValue());
    updateURL();
    if (state.subscribed && !state.ended) subscribe(state.lastSeq === null ? 0 : state.lastSeq + 1, true);
  });
  const sliderTargetNs = () => {
    const span = state.info.last_ts_ns - state.info.first_ts_ns;
    return state.info.first_ts_ns + Math.round((Number(ui.seek.value) / 1000) * span);
  };
  ui.seek.addEventListener("input", () => {
    if (!state.info) return;
    state.dragging = true;
    ui.clock.textContent = iso(sliderTargetNs());
  });
  ui.seek.addEventListener("change", async () => {
    if (!state.info) return;
    state.dragging = false;
    await seekTo({ ts: sliderTargetNs() });
  });
  ui.log.addEventListener("change", async () => {
    state.symbols = [];
    await selectLog(ui.log.value);
    updateURL();
  });

  async function selectLog(name, wanted) {
    if (state.subscribed) socket.emit("unsubscribe", {});
    state.subscribed = false; state.playing = false; state.ended = false; state.seekSeq = null;
    state.lastSeq = null; state.clockTs = null; state.seekTargetNs = null; state.lagMs = null;
    resetFidelity();
    updatePlay();
    clearAlerts();
    try {
      state.info = await fetchJSON(`/api/logs/${encodeURIComponent(name)}`);
    } catch (err) { showError(String(err)); return; }
    const known = (wanted || []).filter((s) => state.info.symbols.includes(s));
    state.symbols = known.length ? state.info.symbols.filter((s) => known.includes(s)) : [...state.info.symbols];
    renderSymbolPicker();
    buildCharts();
    ui.seek.value = "0";
    state.clockTs = state.info.first_ts_ns;
    ui.stateOut.textContent = "ready";
    loadOverview(name);
    scheduleFrame();
  }

  async function loadLogs() {
    // The view a link describes: log, speed, symbols, interval, mode, sma (unknown values ignored).
    if (SPEEDS.includes(params.get("speed"))) ui.speed.value = params.get("speed");
    if (params.get("interval") in INTERVALS) { state.interval = params.get("interval"); ui.interval.value = state.interval; }
    if (MODES.includes(params.get("mode"))) { state.mode = params.get("mode"); $(`mode-${state.mode}`).checked = true; }
    const sma = Number(params.get("sma"));
    if (params.get("sma") && Number.isInteger(sma) && sma >= 1 && sma <= 10000) ui.sma.value = String(sma);
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
    await selectLog(ui.log.value, (params.get("symbols") || "").split(",").filter(Boolean));
    updateURL();
    if (params.get("autoplay")) togglePlay();
  }
  updatePlay();
  loadLogs();
})();
