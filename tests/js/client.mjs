// A real JavaScript client: the official socket.io-client (and Apache Arrow JS for "arrow").
// Usage: node client.mjs URL LOG json|arrow  -> prints one JSON summary line.
import { io } from "socket.io-client";
import { tableFromIPC } from "apache-arrow";

const [url, log, encoding] = process.argv.slice(2);
const socket = io(url, { transports: ["websocket"], reconnection: false });
const seen = { count: 0, contiguous: true, next: 0, smaNulls: 0, firstPrice: null,
               lastTs: null, statuses: [], badAck: null };
const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout", ...seen })); process.exit(3); }, 60000);

function take(seqs, prices, smas, tss) {
  for (let i = 0; i < seqs.length; i++) {
    if (seqs[i] !== seen.next) seen.contiguous = false;
    seen.next = seqs[i] + 1;
    seen.count++;
    if (smas[i] === null) seen.smaNulls++;
  }
  if (seen.firstPrice === null) seen.firstPrice = prices[0];
  seen.lastTs = String(tss[tss.length - 1]);
}

socket.on("ticks", (batch) => {
  if (encoding === "arrow") {
    const table = tableFromIPC(new Uint8Array(batch));
    const seq = Array.from(table.getChild("seq").toArray(), Number);
    const sma = table.getChild("sma");
    const smas = seq.map((_, i) => (sma.isValid(i) ? sma.get(i) : null));
    // Raw int64 nanoseconds: .get() would convert the timestamp to float milliseconds.
    const ts = table.getChild("ts").data[0].values;
    take(seq, Array.from(table.getChild("price").toArray()), smas, [ts[ts.length - 1]]);
  } else {
    take(batch.seq, batch.price, batch.sma, batch.ts);
  }
});
socket.on("status", (s) => seen.statuses.push(s.state));
socket.on("end", (e) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ ...seen, end: e }));
  socket.close();
});
socket.on("connect", async () => {
  seen.badAck = await socket.emitWithAck("subscribe", { log: "../etc/passwd" });
  const ack = await socket.emitWithAck("subscribe", { log, speed: "max", encoding });
  if (!ack.ok) { console.log(JSON.stringify({ error: ack.error })); process.exit(2); }
});
socket.on("connect_error", (err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(2); });
