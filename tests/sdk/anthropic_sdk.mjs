// anthropic_sdk.mjs - the official Anthropic TypeScript SDK (package
// "@anthropic-ai/sdk", pinned in package.json) against a running modelgate
// whose targets speak `api: "anthropic"`.
//
//   node tests/sdk/anthropic_sdk.mjs PORT CASE...
//
// tests/integration/test_sdk.c starts mg-mock and modelgate with the config
// these cases expect and runs one case per call. Each case asserts on what
// the SDK returns or throws (an application's view), prints "ok CASE: ..."
// when it passes; exits 1 with "FAIL CASE: ..." on the first mismatch (2 on
// bad usage, 3 when the watchdog fires). The SDK's retries are off, every
// call has a timeout and a watchdog bounds the run, streams included.
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import { VERSION } from "@anthropic-ai/sdk/version";

const CALL_MS = Number(process.env.MG_SDK_TIMEOUT_MS || 10000);
const RUN_MS = Number(process.env.MG_SDK_RUN_MS || 45000);

const [port, ...cases] = process.argv.slice(2);
if (!/^[0-9]+$/.test(port || "") || cases.length === 0) {
  console.error("usage: node anthropic_sdk.mjs PORT CASE...");
  process.exit(2);
}

// The client's key is one of modelgate's clients (sent as x-api-key); the
// upstream gets the target's own key.
const client = new Anthropic({
  baseURL: `http://127.0.0.1:${port}`,
  apiKey: "sk-client-key-not-forwarded",
  maxRetries: 0,
  timeout: CALL_MS,
});
const opts = { maxRetries: 0, timeout: CALL_MS };

const answer = (upstream, prompt) =>
  `Mock answer from ${upstream} to: ${prompt.slice(0, 40)}`;
const user = (content) => [{ role: "user", content }];

// The call must reject with exactly this error class, and the fields.
async function rejects(call, cls, want, what) {
  let err;
  try {
    const got = await call();
    assert.fail(`${what}: wanted ${cls.name}, got an answer: ` +
      JSON.stringify(got).slice(0, 300));
  } catch (e) {
    if (e instanceof assert.AssertionError)
      throw e;
    err = e;
  }
  assert.equal(err.constructor.name, cls.name,
    `${what}: error class (${err.constructor.name}: ${err.message})`);
  assert.ok(err instanceof cls);
  for (const [k, v] of Object.entries(want))
    assert.deepEqual(err[k], v, `${what}: error.${k} (${err.message})`);
  return err;
}

const CASES = {
  // messages.create: the text block, stop reason, usage with the cache
  // tokens the upstream reported, the decision headers and request-id.
  async messages() {
    const prompt = "Hello Claude, through the gate";
    const { data, response } = await client.messages
      .create({ model: "claude-test", max_tokens: 64,
        messages: user(prompt) }, opts)
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.type, "message");
    assert.equal(data.role, "assistant");
    assert.equal(data.model, "m-claude");
    assert.equal(data.content.length, 1);
    assert.equal(data.content[0].type, "text");
    assert.equal(data.content[0].text, answer("m-claude", prompt));
    assert.equal(data.stop_reason, "end_turn");
    assert.ok(data.usage.input_tokens > 0 && data.usage.output_tokens > 0,
      JSON.stringify(data.usage));
    assert.equal(data.usage.cache_read_input_tokens, 40);
    assert.equal(data.usage.cache_creation_input_tokens, 12);
    assert.equal(response.headers.get("x-modelgate-served-by"), "claude");
    assert.equal(response.headers.get("x-modelgate-reason"), "direct");
    assert.match(response.headers.get("x-modelgate-decision") || "",
      /^[0-9a-f]{32}$/);
    // Anthropic's request-id passes through: the SDK's _request_id.
    assert.ok(data._request_id, "_request_id from request-id");

    // A system prompt as blocks.
    const s = await client.messages.create({ model: "claude-test",
      max_tokens: 64, system: [{ type: "text", text: "Be terse" }],
      messages: user("With a system prompt") }, opts);
    assert.equal(s.content[0].text, answer("m-claude", "With a system prompt"));
    return `${data.id}, request ${data._request_id}`;
  },

  // Streaming: the raw events with for await (message_start ...
  // message_stop), and the messages.stream() helper with finalMessage().
  async stream() {
    const prompt = "Stream it in pieces, please";
    const { data: raw, response } = await client.messages
      .create({ model: "claude-test", max_tokens: 64, stream: true,
        messages: user(prompt) }, opts)
      .withResponse();
    assert.match(response.headers.get("content-type") || "",
      /^text\/event-stream/);
    assert.equal(response.headers.get("x-modelgate-served-by"), "claude");
    const types = [];
    let text = "";
    for await (const ev of raw) {
      types.push(ev.type);
      if (ev.type === "content_block_delta" && ev.delta.type === "text_delta")
        text += ev.delta.text;
    }
    assert.equal(types[0], "message_start", types.join(","));
    assert.equal(types[types.length - 1], "message_stop", types.join(","));
    for (const t of ["content_block_start", "content_block_delta",
      "content_block_stop", "message_delta"])
      assert.ok(types.includes(t), `${t} in ${types.join(",")}`);
    assert.equal(text, answer("m-claude", prompt));

    const helper = client.messages.stream({ model: "claude-test",
      max_tokens: 64, messages: user("Helper stream") }, opts);
    const seen = [];
    helper.on("streamEvent", (ev) => seen.push(ev.type));
    let deltas = "";
    helper.on("text", (d) => { deltas += d; });
    const final = await helper.finalMessage();
    assert.equal(final.content[0].text, answer("m-claude", "Helper stream"));
    assert.equal(deltas, final.content[0].text);
    assert.equal(final.stop_reason, "end_turn");
    assert.ok(final.usage.output_tokens > 0, JSON.stringify(final.usage));
    assert.equal(final.usage.cache_read_input_tokens, 40);
    assert.equal(seen[0], "message_start");
    assert.equal(seen[seen.length - 1], "message_stop");
    return `${types.length} events; helper ${seen.length}`;
  },

  // The upstream dies half-way: the SDK throws while iterating (modelgate
  // ends the stream with an Anthropic `error` event, no message_stop), and
  // finalMessage() rejects: no truncated answer passes for a whole one.
  async stream_die() {
    const prompt = "This stream will die half way";
    const full = answer("m-claude-die", prompt);
    const raw = await client.messages.create({ model: "claude-die",
      max_tokens: 64, stream: true, messages: user(prompt) }, opts);
    const types = [];
    let text = "";
    const err = await rejects(async () => {
      for await (const ev of raw) {
        types.push(ev.type);
        if (ev.type === "content_block_delta")
          text += ev.delta.text ?? "";
      }
      return { ended: "normally", types };
    }, Anthropic.APIError, { status: undefined }, "iterating a dying stream");
    assert.ok(!types.includes("message_stop"), types.join(","));
    assert.equal(types[0], "message_start");
    assert.ok(full.startsWith(text) && text.length < full.length,
      `partial text ${JSON.stringify(text)}`);
    assert.equal(err.error?.type, "error", JSON.stringify(err.error));
    assert.equal(err.type, err.error?.error?.type);
    assert.ok(["api_error", "overloaded_error"].includes(err.type),
      `error type ${err.type}`);

    const helper = client.messages.stream({ model: "claude-die",
      max_tokens: 64, messages: user(prompt) }, opts);
    helper.on("error", () => {});
    await rejects(() => helper.finalMessage(), Anthropic.APIError,
      { status: undefined }, "finalMessage on a dying stream");
    return `threw ${err.type} "${err.error?.error?.message}" after ` +
      `${text.length} of ${full.length} characters`;
  },

  // Upstream errors in Anthropic's shape reach the SDK as its own classes,
  // with the body and the type the application switches on.
  async upstream_errors() {
    const over = await rejects(() => client.messages.create({
      model: "claude-overloaded", max_tokens: 16, messages: user("Busy?") },
    opts), Anthropic.OverloadedError, { status: 529 }, "upstream 529");
    // This SDK has a class of its own for 529, under InternalServerError.
    assert.ok(over instanceof Anthropic.InternalServerError);
    assert.equal(over.error?.type, "error");
    assert.equal(over.error?.error?.type, "overloaded_error");
    assert.equal(over.type, "overloaded_error");
    assert.equal(over.headers.get("x-modelgate-served-by"), "claude-busy");

    const limited = await rejects(() => client.messages.create({
      model: "claude-limited", max_tokens: 16, messages: user("Slow?") },
    opts), Anthropic.RateLimitError, { status: 429 }, "upstream 429");
    assert.equal(limited.error?.error?.type, "rate_limit_error");
    assert.equal(limited.headers.get("retry-after"), "7");

    const bad = await rejects(() => client.messages.create({
      model: "claude-picky", max_tokens: 16, messages: user("Too long") },
    opts), Anthropic.BadRequestError, { status: 400 }, "upstream 400");
    assert.equal(bad.error?.error?.type, "invalid_request_error");
    assert.equal(bad.error?.error?.message, "prompt is too long");

    // The client's own key is unknown: 401 before any upstream.
    const stranger = new Anthropic({ baseURL: `http://127.0.0.1:${port}`,
      apiKey: "sk-ant-not-a-client", maxRetries: 0, timeout: CALL_MS });
    await rejects(() => stranger.messages.create({ model: "claude-test",
      max_tokens: 16, messages: user("Let me in") }, opts),
    Anthropic.AuthenticationError, { status: 401 }, "a wrong client key");
    return "529 overloaded_error, 429 with retry-after, 400, 401";
  },

  // messages.countTokens through the gate, to the target's upstream.
  async count_tokens() {
    const short = await client.messages.countTokens(
      { model: "claude-test", messages: user("Hi") }, opts);
    const long = await client.messages.countTokens({ model: "claude-test",
      system: "You are a careful assistant.",
      messages: user("Count the tokens of this much longer prompt, please, " +
        "all of them.") }, opts);
    assert.ok(Number.isInteger(short.input_tokens) && short.input_tokens > 0,
      JSON.stringify(short));
    assert.ok(long.input_tokens > short.input_tokens,
      `${long.input_tokens} <= ${short.input_tokens}`);
    return `${short.input_tokens} and ${long.input_tokens} tokens`;
  },
};

const watchdog = setTimeout(() => {
  console.error(`FAIL: still running after ${RUN_MS} ms (a call hangs)`);
  process.exit(3);
}, RUN_MS);
watchdog.unref();

console.log(`anthropic-sdk-typescript ${VERSION} on node ${process.version}`);
for (const name of cases) {
  const run = CASES[name];
  if (!run) {
    console.error(`unknown case ${name} (${Object.keys(CASES).join(", ")})`);
    process.exit(2);
  }
  try {
    console.log(`ok ${name}: ${await run()}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e.message}`);
    if (!(e instanceof assert.AssertionError))
      console.error(e.stack);
    process.exit(1);
  }
}
