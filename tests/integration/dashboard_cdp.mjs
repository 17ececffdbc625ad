// dashboard_cdp.mjs - drives the live dashboard in headless Chromium over
// the DevTools protocol for tests/integration/test_dashboard.c, as a person
// would: the page opens and asks for the admin token, the token is typed
// and the live view appears; it must show the ramp and the open breaker;
// it is laid out at 1,280 and 1,920 px (no sideways scroll) and
// screenshotted; "Kill" is clicked with the mouse, the dialog's token
// field filled, the kill confirmed, and the page must then show the flag
// killed. Every console message of level error, every uncaught exception
// and every failed load fails the run.
//
// node --experimental-websocket dashboard_cdp.mjs CHROMIUM URL TOKEN FLAG
//      TARGET ARTIFACT_DIR PROFILE_DIR
// Prints one JSON line of results; exits 0 when every check held.
import { spawn } from "node:child_process";
import { writeFileSync, mkdirSync } from "node:fs";

const [chromium, url, token, flag, target, artifacts, profile] =
  process.argv.slice(2);
const DEADLINE_MS = 90000;
const problems = [];
const consoleErrors = [];
const notes = {};

function fail(msg) {
  problems.push(msg);
  throw new Error(msg);
}

const chrome = spawn(chromium, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
  "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
  "--remote-debugging-port=0", "--remote-allow-origins=*",
  `--user-data-dir=${profile}`, "--window-size=1280,1000", "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
process.on("exit", () => { try { chrome.kill("SIGKILL"); } catch { /* gone */ } });
const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, problems: [...problems, "deadline"] }));
  process.exit(1);
}, DEADLINE_MS);

const wsUrl = await new Promise((resolve, reject) => {
  let err = "";
  chrome.stderr.on("data", (d) => {
    err += d;
    const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
    if (m) resolve(m[1]);
  });
  chrome.on("exit", (c) => reject(new Error(`chromium exited (${c}): ${err}`)));
});

const ws = new WebSocket(wsUrl);
await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
let nextId = 1;
const waiting = new Map();
const listeners = [];
ws.onmessage = (ev) => {
  const m = JSON.parse(ev.data);
  if (m.id && waiting.has(m.id)) {
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.error) w.rej(new Error(`${w.method}: ${m.error.message}`));
    else w.res(m.result);
    return;
  }
  for (const l of listeners) l(m);
};
function send(method, params = {}, sessionId) {
  const id = nextId++;
  ws.send(JSON.stringify({ id, method, params, sessionId }));
  return new Promise((res, rej) => waiting.set(id, { res, rej, method }));
}

const { targetId } = await send("Target.createTarget", { url: "about:blank" });
const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
const page = (method, params) => send(method, params, sessionId);

listeners.push((m) => {
  if (m.sessionId !== sessionId) return;
  if (m.method === "Runtime.consoleAPICalled" &&
      (m.params.type === "error" || m.params.type === "assert"))
    consoleErrors.push("console: " + m.params.args.map((a) => a.value ?? a.description).join(" "));
  else if (m.method === "Runtime.exceptionThrown")
    consoleErrors.push("exception: " + (m.params.exceptionDetails.exception?.description ??
      m.params.exceptionDetails.text));
  else if (m.method === "Log.entryAdded" && m.params.entry.level === "error")
    consoleErrors.push(`log (${m.params.entry.source}): ${m.params.entry.text} ${m.params.entry.url ?? ""}`);
  else if (m.method === "Network.loadingFailed")
    consoleErrors.push(`load failed: ${m.params.errorText}`);
  else if (m.method === "Network.responseReceived" && m.params.response.status >= 400)
    consoleErrors.push(`HTTP ${m.params.response.status}: ${m.params.response.url}`);
});
await page("Runtime.enable");
await page("Log.enable");
await page("Page.enable");
await page("Network.enable");

async function js(expr) {
  const r = await page("Runtime.evaluate", { expression: expr, returnByValue: true, awaitPromise: true });
  if (r.exceptionDetails) fail(`evaluate ${expr}: ${r.exceptionDetails.text}`);
  return r.result.value;
}
async function until(what, expr, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await js(expr);
    if (v) return v;
    if (Date.now() > end) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
async function setWidth(width, height = 1000) {
  await page("Emulation.setDeviceMetricsOverride",
    { width, height, deviceScaleFactor: 1, mobile: false });
}
// A real click: the mouse pressed and released over the element's centre.
async function click(selector) {
  const box = await js(`(function(){var e=document.querySelector(${JSON.stringify(selector)});
    if(!e)return null;e.scrollIntoView({block:"center"});var r=e.getBoundingClientRect();
    return {x:r.left+r.width/2,y:r.top+r.height/2};})()`);
  if (!box) fail(`no element ${selector} to click`);
  for (const type of ["mouseMoved", "mousePressed", "mouseReleased"])
    await page("Input.dispatchMouseEvent",
      { type, x: box.x, y: box.y, button: "left", clickCount: type === "mouseMoved" ? 0 : 1 });
}
async function type(text) { await page("Input.insertText", { text }); }

async function shoot(width) {
  await setWidth(width);
  await js("window.scrollTo(0,0)");
  const dims = await js(`({w:innerWidth,sw:document.documentElement.scrollWidth,
    h:document.documentElement.scrollHeight})`);
  if (dims.w !== width) fail(`window is ${dims.w} px, not ${width}`);
  if (dims.sw > width) fail(`at ${width} px the page scrolls sideways (${dims.sw} px)`);
  await setWidth(width, Math.min(Math.max(dims.h, 600), 4000));
  const shot = await page("Page.captureScreenshot", { format: "png" });
  mkdirSync(artifacts, { recursive: true });
  const file = `${artifacts}/dashboard-${width}.png`;
  const png = Buffer.from(shot.data, "base64");
  writeFileSync(file, png);
  notes[`shot${width}`] = { file, bytes: png.length, height: dims.h };
}

let ok = false;
try {
  await setWidth(1280);
  const loaded = new Promise((res) => listeners.push((m) => {
    if (m.sessionId === sessionId && m.method === "Page.loadEventFired") res();
  }));
  await page("Page.navigate", { url });
  await loaded;

  // Reading needs the token: the page asks for it and shows nothing else.
  await until("the token form", `document.getElementById("tokenbar").className==="show"`);
  if (await js(`document.querySelectorAll("section.flag").length`) !== 0)
    fail("flags shown before the token was given");
  await click("#token");
  await type(token);
  await click("#token-save");

  // The live view: the flag, its ramp, the breaker that is open.
  const sel = (f) => `section.flag[data-flag=${JSON.stringify(f)}]`;
  await until("the flag's card", `!!document.querySelector(${JSON.stringify(sel(flag))})`);
  await until("the ramp", `!!document.querySelector(${JSON.stringify(`.ramp[data-flag=${JSON.stringify(flag)}]`)})`);
  notes.ramp = await js(`(function(){var r=document.querySelector(${JSON.stringify(`.ramp[data-flag=${JSON.stringify(flag)}]`)});
    return {step:r.querySelector(".ramp-step").textContent,weight:r.querySelector(".ramp-weight").textContent,
    next:r.querySelector(".ramp-next").textContent,status:r.querySelector(".badge").textContent,
    steps:r.querySelectorAll(".step").length};})()`);
  notes.guards = await js(`[...document.querySelectorAll(${JSON.stringify(
    `.ramp[data-flag=${JSON.stringify(flag)}] table.guards tbody tr`)})].map(
    (tr) => [...tr.children].map((td) => td.textContent))`);
  notes.variantRows = await js(`document.querySelectorAll(${JSON.stringify(sel(flag) + " table.variants tbody tr")}).length`);
  notes.breaker = await until("the open breaker",
    `(function(){var t=document.querySelector(${JSON.stringify(`#breakers tr[data-target=${JSON.stringify(target)}] .badge`)});
    return t&&t.textContent==="open"?t.textContent:null;})()`);
  notes.events = await js(`[...document.querySelectorAll("#events li")].map(l=>l.getAttribute("data-event"))`);
  notes.title = await js("document.title");

  await shoot(1280);
  await shoot(1920);
  await setWidth(1280);

  // Kill: the button asks for the token; an empty one is refused in the
  // page (nothing is sent); typed, the kill goes through.
  await click(`${sel(flag)} button[data-action="kill"]`);
  await until("the kill dialog", `document.getElementById("confirm").open`);
  notes.dialog = await js(`document.getElementById("confirm-q").textContent`);
  await js(`document.getElementById("confirm-token").value=""`);
  await click("#confirm-go");
  await until("the missing-token message",
    `document.getElementById("confirm-msg").textContent.indexOf("token")>=0`);
  await click("#confirm-token");
  await type(token);
  await click("#confirm-go");
  await until("the dialog to close", `!document.getElementById("confirm").open`);
  notes.killedBadge = await until("the flag shown killed",
    `(function(){var b=document.querySelector(${JSON.stringify(sel(flag) + " h2 .badge")});
    return b&&b.textContent==="killed"?b.textContent:null;})()`);
  notes.unkillEnabled = await js(`!document.querySelector(${JSON.stringify(sel(flag) + ' button[data-action="unkill"]')}).disabled`);
  // The next read lands without a fault.
  await new Promise((r) => setTimeout(r, 2500));
  if (consoleErrors.length) fail(`${consoleErrors.length} console errors`);
  ok = true;
} catch (e) {
  if (!problems.includes(e.message)) problems.push(e.message);
}
clearTimeout(deadline);
console.log(JSON.stringify({ ok, problems, consoleErrors, notes }));
try { await send("Browser.close"); } catch { /* closing */ }
process.exit(ok ? 0 : 1);
