// openai_sdk.mjs - the official OpenAI Node SDK (package "openai", pinned in
// package.json) against a running modelgate.
//
//   node tests/sdk/openai_sdk.mjs PORT CASE...
//
// tests/integration/test_sdk.c starts mg-mock and modelgate with the config
// these cases expect (aliases, upstream model names, mock behaviours) and
// runs one case per call. Each case asserts on what the SDK returns or
// throws, the way an application would see it, prints "ok CASE: ..." when
// it passes, and the script exits 1 with "FAIL CASE: ..." on the first
// mismatch (2 on bad usage, 3 when the watchdog fires).
//
// The SDK's own retries are off (maxRetries: 0): a retry would hide what
// modelgate answered the first time. Every call has a timeout, and a
// watchdog bounds the whole run, streams included (the SDK's timeout stops
// at the response head).
import assert from "node:assert/strict";
import OpenAI from "openai";
import { VERSION } from "openai/version";

const CALL_MS = Number(process.env.MG_SDK_TIMEOUT_MS || 10000);
const RUN_MS = Number(process.env.MG_SDK_RUN_MS || 45000);

const [port, ...cases] = process.argv.slice(2);
if (!/^[0-9]+$/.test(port || "") || cases.length === 0) {
  console.error("usage: node openai_sdk.mjs PORT CASE...");
  process.exit(2);
}

const client = new OpenAI({
  baseURL: `http://127.0.0.1:${port}/v1`,
  apiKey: "sk-client-key-not-forwarded",
  maxRetries: 0,
  timeout: CALL_MS,
});
// Per-call options: the same bounds, said where each call is made.
const opts = { maxRetries: 0, timeout: CALL_MS };

// The mock's answer text: "Mock answer from <upstream model> to: " and the
// first 40 characters of the last prompt.
const answer = (upstream, prompt) =>
  `Mock answer from ${upstream} to: ${prompt.slice(0, 40)}`;
const user = (content) => [{ role: "user", content }];

// ---- checks ----------------------------------------------------------------

// The headers that say how modelgate decided (DESIGN.md, "What the client
// sees"). want: {served, flag, variant, reason, fallback}; fallback null
// means the header must be absent.
function decision(headers, want, what) {
  const h = (n) => headers.get(n);
  assert.match(h("x-modelgate-decision") || "", /^[0-9a-f]{32}$/,
    `${what}: x-modelgate-decision`);
  for (const [name, key] of [["served-by", "served"], ["flag", "flag"],
    ["variant", "variant"], ["reason", "reason"],
    ["fallback", "fallback"]]) {
    if (!(key in want))
      continue;
    assert.equal(h(`x-modelgate-${name}`), want[key],
      `${what}: x-modelgate-${name}`);
  }
  return h("x-modelgate-decision");
}

// The call must reject with exactly this error class (not a subclass: a
// connection error is an APIError too), and the listed fields.
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

// Iterate a stream to its end: the chunks and the text of their deltas.
async function drain(stream) {
  const chunks = [];
  let text = "";
  for await (const chunk of stream) {
    chunks.push(chunk);
    text += chunk.choices[0]?.delta?.content ?? chunk.choices[0]?.text ?? "";
  }
  return { chunks, text };
}

// ---- cases -----------------------------------------------------------------

const CASES = {
  // A plain completion through a flag, and one through an alias naming a
  // target: the content is the mock's, the headers say who served it.
  async chat() {
    const prompt = "Hello through the SDK";
    const { data, response } = await client.chat.completions
      .create({ model: "gpt-flag", user: "alice", messages: user(prompt) },
        opts)
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.object, "chat.completion");
    assert.equal(data.choices[0].message.role, "assistant");
    assert.equal(data.choices[0].message.content, answer("m-canary", prompt));
    assert.equal(data.choices[0].finish_reason, "stop");
    assert.ok(data.usage.prompt_tokens > 0 && data.usage.completion_tokens > 0,
      "usage");
    const id = decision(response.headers, {
      served: "canary", flag: "chat-model", variant: "canary",
      reason: "rollout", fallback: null,
    }, "flag");

    const direct = await client.chat.completions
      .create({ model: "gpt-test", messages: user("Direct please") }, opts)
      .withResponse();
    assert.equal(direct.data.choices[0].message.content,
      answer("m-main", "Direct please"));
    decision(direct.response.headers, {
      served: "main", flag: "-", variant: "-", reason: "direct",
      fallback: null,
    }, "direct");

    // .asResponse(): the raw fetch Response, body unread.
    const raw = await client.chat.completions
      .create({ model: "gpt-test", messages: user("Raw") }, opts)
      .asResponse();
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get("content-type"), "application/json");
    assert.equal((await raw.json()).choices[0].message.content,
      answer("m-main", "Raw"));
    return `decision ${id}`;
  },

  // stream: true, iterated with for await; the deltas add up to the answer,
  // the usage chunk asked for comes last, the stream ends normally. Then the
  // SDK's stream helper, which assembles the final completion itself.
  async stream() {
    const prompt = "Stream please, in several pieces";
    const { data: stream, response } = await client.chat.completions
      .create({
        model: "gpt-test", stream: true, messages: user(prompt),
        stream_options: { include_usage: true },
      }, opts)
      .withResponse();
    assert.match(response.headers.get("content-type") || "",
      /^text\/event-stream/);
    decision(response.headers, { served: "main", reason: "direct",
      fallback: null }, "stream");
    const { chunks, text } = await drain(stream);
    assert.equal(text, answer("m-main", prompt));
    assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
    for (const c of chunks)
      assert.equal(c.object, "chat.completion.chunk");
    const last = chunks[chunks.length - 1];
    assert.equal(last.choices.length, 0, "the usage chunk has no choices");
    assert.ok(last.usage && last.usage.completion_tokens > 0, "usage chunk");
    assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, "stop");

    const helper = client.beta.chat.completions.stream(
      { model: "gpt-test", messages: user("Helper stream") }, opts);
    const final = await helper.finalChatCompletion();
    assert.equal(final.choices[0].message.content,
      answer("m-main", "Helper stream"));
    assert.equal(final.choices[0].finish_reason, "stop");
    return `${chunks.length} chunks`;
  },

  // The upstream dies half-way through a stream: modelgate ends it with an
  // error event and no [DONE], so the SDK throws while iterating instead of
  // handing back a truncated answer as if it were complete.
  async stream_die() {
    const prompt = "This stream will die half way";
    const full = answer("m-die", prompt);
    const stream = await client.chat.completions.create(
      { model: "gpt-die", stream: true, messages: user(prompt) }, opts);
    const chunks = [];
    let text = "";
    const err = await rejects(async () => {
      for await (const chunk of stream) {
        chunks.push(chunk);
        text += chunk.choices[0]?.delta?.content ?? "";
      }
      return { ended: "normally", chunks: chunks.length, text };
    }, OpenAI.APIError, { status: undefined, code: "upstream_truncated",
      type: "server_error" }, "iterating a dying stream");
    assert.ok(chunks.length >= 1, "no chunk arrived before the error");
    assert.ok(full.startsWith(text) && text.length < full.length,
      `partial text ${JSON.stringify(text)}`);

    // The stream helper rejects too.
    const helper = client.beta.chat.completions.stream(
      { model: "gpt-die", messages: user(prompt) }, opts);
    await rejects(() => helper.finalChatCompletion(), OpenAI.APIError,
      { code: "upstream_truncated" }, "stream helper on a dying stream");
    return `threw "${err.message}" after ${chunks.length} chunks`;
  },

  // No alias claims the model and there is no default route.
  async unknown_model() {
    const err = await rejects(
      () => client.chat.completions.create(
        { model: "no-such-model", messages: user("Anyone?") }, opts),
      OpenAI.NotFoundError,
      { status: 404, code: "model_not_found", type: "invalid_request_error",
        param: "model" },
      "unknown model");
    assert.match(err.message, /no-such-model/);
    assert.equal(err.headers["x-modelgate-reason"], "unrouted");
    assert.match(err.headers["x-modelgate-decision"] || "", /^[0-9a-f]{32}$/);
    return err.message;
  },

  // Requests refused for the client's own fault: by the upstream (its JSON
  // error passed through, not masked by the target's fallback), and by
  // modelgate itself (an empty model).
  async bad_request() {
    const up = await rejects(
      () => client.chat.completions.create(
        { model: "gpt-picky", max_tokens: 999999, messages: user("Too much") },
        opts),
      OpenAI.BadRequestError,
      { status: 400, code: "context_length_exceeded",
        type: "invalid_request_error", param: "max_tokens",
        message: "400 max_tokens is too large for this model" },
      "upstream 400");
    assert.equal(up.headers["x-modelgate-served-by"], "picky");
    assert.equal(up.headers["x-modelgate-fallback"], undefined);

    await rejects(
      () => client.chat.completions.create(
        { model: "", messages: user("Which model?") }, opts),
      OpenAI.BadRequestError,
      { status: 400, code: "missing_model", param: "model" },
      "empty model");

    return "upstream 400 passed through, missing_model";
  },

  // A body over limits.body_bytes (4 MiB by default), say a prompt with a
  // large document pasted in: the SDK must get the 413 body_too_large the
  // README promises, every time. 413 has no class of its own in the SDK: a
  // plain APIError with the status. A "Connection error." (APIConnectionError)
  // means modelgate closed the connection while the request was still
  // arriving, so the SDK's write failed before it read the answer.
  async body_too_large() {
    const big = "x".repeat(8 * 1024 * 1024);
    for (let i = 1; i <= 5; i++)
      await rejects(
        () => client.chat.completions.create(
          { model: "gpt-test", messages: user(big) }, opts),
        OpenAI.APIError,
        { status: 413, code: "body_too_large" },
        `8 MiB body, attempt ${i} of 5`);
    return "5 of 5 got the 413";
  },

  // Upstream failures with no fallback to hide them: the upstream's own
  // errors reach the SDK as they are, Retry-After included.
  async upstream_errors() {
    const down = await rejects(
      () => client.chat.completions.create(
        { model: "gpt-down", messages: user("Down?") }, opts),
      OpenAI.InternalServerError,
      { status: 503, code: "overloaded", type: "server_error" },
      "upstream 503");
    assert.equal(down.headers["x-modelgate-served-by"], "down");

    const limited = await rejects(
      () => client.chat.completions.create(
        { model: "gpt-limited", messages: user("Slow down?") }, opts),
      OpenAI.RateLimitError,
      { status: 429, code: "rate_limit_exceeded", type: "requests" },
      "upstream 429");
    assert.equal(limited.headers["retry-after"], "7");

    // The confidence gate abstains: 422 low_confidence.
    const unsure = await rejects(
      () => client.chat.completions.create(
        { model: "gpt-gated", messages: user("Are you sure?") }, opts),
      OpenAI.UnprocessableEntityError,
      { status: 422, code: "low_confidence" },
      "abstaining gate");
    assert.ok(unsure.headers["x-modelgate-confidence"],
      "x-modelgate-confidence on an abstention");
    return "503, 429 with retry-after, 422 low_confidence";
  },

  // The primary fails (503, then a hang past first_byte_ms): the backup
  // answers, for a plain call and for a stream, and the headers say so.
  async fallback() {
    const prompt = "Primary is down";
    const a = await client.chat.completions
      .create({ model: "gpt-fallback", messages: user(prompt) }, opts)
      .withResponse();
    assert.equal(a.data.choices[0].message.content,
      answer("m-backup", prompt));
    decision(a.response.headers, { served: "backup", fallback: "5xx",
      reason: "direct" }, "503 fallback");

    const b = await client.chat.completions
      .create({ model: "gpt-slow-fallback", messages: user("Primary hangs") },
        opts)
      .withResponse();
    assert.equal(b.data.choices[0].message.content,
      answer("m-backup", "Primary hangs"));
    decision(b.response.headers, { served: "backup", fallback: "timeout" },
      "timeout fallback");

    const s = await client.chat.completions
      .create({ model: "gpt-fallback", stream: true,
        messages: user("Stream from the backup") }, opts)
      .withResponse();
    decision(s.response.headers, { served: "backup", fallback: "5xx" },
      "streamed fallback");
    const { text } = await drain(s.data);
    assert.equal(text, answer("m-backup", "Stream from the backup"));
    return "5xx and timeout, plain and streamed";
  },

  // The legacy completions API, plain and streamed.
  async completions() {
    const prompt = "Say this is a test";
    const c = await client.completions.create(
      { model: "gpt-instruct", prompt, max_tokens: 16 }, opts);
    assert.equal(c.object, "text_completion");
    assert.equal(c.choices[0].text, answer("m-main", prompt));
    assert.equal(c.choices[0].finish_reason, "stop");

    const s = await client.completions.create(
      { model: "gpt-instruct", prompt: "Stream a test", stream: true }, opts);
    const { chunks, text } = await drain(s);
    assert.equal(text, answer("m-main", "Stream a test"));
    assert.ok(chunks.every((k) => k.object === "text_completion"));
    return c.id;
  },

  // Embeddings: with encoding_format "float", and with the SDK's default,
  // which asks for base64 and decodes it to float32 itself. Both must give
  // the same vector (to float32 precision).
  async embeddings() {
    const input = ["The quick brown fox", "jumped over the lazy dog"];
    const f = await client.embeddings.create(
      { model: "text-embedding-test", input, encoding_format: "float" }, opts);
    assert.equal(f.object, "list");
    assert.equal(f.data.length, 2);
    for (const [i, e] of f.data.entries()) {
      assert.equal(e.object, "embedding");
      assert.equal(e.index, i);
      assert.ok(Array.isArray(e.embedding) && e.embedding.length > 0,
        "a non-empty vector");
      assert.ok(e.embedding.every((v) => typeof v === "number" &&
        Number.isFinite(v) && v >= -1 && v <= 1), "numbers in [-1, 1]");
    }
    assert.notDeepEqual(f.data[0].embedding, f.data[1].embedding);

    const d = await client.embeddings.create(
      { model: "text-embedding-test", input }, opts);
    assert.equal(d.data.length, 2);
    for (const [i, e] of d.data.entries()) {
      const want = f.data[i].embedding;
      assert.equal(e.embedding.length, want.length, "base64 vector length");
      e.embedding.forEach((v, k) => assert.ok(
        Math.abs(v - want[k]) < 1e-6,
        `base64 vector [${i}][${k}]: ${v} != ${want[k]}`));
    }
    return `${f.data[0].embedding.length} dimensions`;
  },

  // Client keys: a key modelgate does not know is the SDK's
  // AuthenticationError with OpenAI's code; the configured one answers, and
  // _request_id is the upstream's x-request-id, passed through.
  async auth() {
    const stranger = new OpenAI({
      baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "sk-not-a-client",
      maxRetries: 0, timeout: CALL_MS,
    });
    await rejects(() => stranger.chat.completions.create(
      { model: "gpt-test", messages: user("Let me in") }, opts),
      OpenAI.AuthenticationError,
      { status: 401, code: "invalid_api_key", type: "invalid_request_error" },
      "a wrong key");
    await rejects(() => stranger.models.list(opts),
      OpenAI.AuthenticationError, { status: 401 }, "models with a wrong key");
    const data = await client.chat.completions.create(
      { model: "gpt-test", messages: user("Known client") }, opts);
    assert.equal(data.choices[0].message.content,
      answer("m-main", "Known client"));
    assert.match(data._request_id || "", /^req_[0-9a-f]+$/, "_request_id");
    return `request ${data._request_id}`;
  },

  // models.list() pages through the aliases; retrieve() finds one and
  // throws NotFoundError for a name that is not routed.
  async models() {
    const ids = [];
    for await (const m of client.models.list(opts)) {
      assert.equal(m.object, "model");
      ids.push(m.id);
    }
    for (const want of ["gpt-test", "gpt-flag", "text-embedding-test"])
      assert.ok(ids.includes(want), `${want} listed in ${ids.join(", ")}`);
    const one = await client.models.retrieve("gpt-flag", opts);
    assert.equal(one.id, "gpt-flag");
    await rejects(() => client.models.retrieve("gpt-nope", opts),
      OpenAI.NotFoundError, { status: 404, code: "model_not_found" },
      "retrieve of an unknown model");
    return `${ids.length} models`;
  },
};


// ---- the Responses API -----------------------------------------------------

// The admin API of the modelgate under test (test_sdk.c gives its port and
// token in the environment): kill a flag, as an operator would mid-chain.
async function adminKill(flag) {
  const port = process.env.MG_SDK_ADMIN_PORT;
  assert.ok(port, "MG_SDK_ADMIN_PORT is not set");
  const r = await fetch(`http://127.0.0.1:${port}/admin/flags/${flag}/kill`, {
    method: "POST",
    headers: { authorization: `Bearer ${process.env.MODELGATE_ADMIN_TOKEN}` },
    signal: AbortSignal.timeout(CALL_MS),
  });
  assert.equal(r.status, 200, `kill ${flag}: ${await r.text()}`);
}

// Iterate a Responses stream: its typed events and the text of the deltas.
async function drainEvents(stream) {
  const events = [];
  let text = "";
  for await (const ev of stream) {
    events.push(ev);
    if (ev.type === "response.output_text.delta")
      text += ev.delta;
  }
  return { events, text };
}

Object.assign(CASES, {
  // client.responses.create: output_text (the SDK's own convenience, made
  // from the output items), usage, and the decision headers.
  async responses() {
    const prompt = "Respond to this, please";
    const { data, response } = await client.responses
      .create({ model: "gpt-resp", input: prompt }, opts)
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.object, "response");
    assert.equal(data.status, "completed");
    assert.equal(data.output_text, answer("m-resp", prompt));
    assert.ok(data.usage && data.usage.output_tokens > 0, "usage");
    assert.match(data.id, /^resp_/, "a Response id");
    decision(response.headers, { served: "resp", flag: "-", variant: "-",
      reason: "direct", fallback: null }, "responses.create");

    // Messages as input, with instructions.
    const m = await client.responses.create({
      model: "gpt-resp", instructions: "Be brief",
      input: [{ role: "user", content: "Second question" }],
    }, opts);
    assert.equal(m.output_text, answer("m-resp", "Second question"));
    return data.id;
  },

  // stream: true with for await: typed events from response.created to
  // response.completed, the deltas adding up to the final text.
  async responses_stream() {
    const prompt = "Stream a response in pieces";
    const { data: stream, response } = await client.responses
      .create({ model: "gpt-resp", input: prompt, stream: true }, opts)
      .withResponse();
    assert.match(response.headers.get("content-type") || "",
      /^text\/event-stream/);
    decision(response.headers, { served: "resp", reason: "direct",
      fallback: null }, "responses stream");
    const { events, text } = await drainEvents(stream);
    const types = events.map((e) => e.type);
    assert.equal(types[0], "response.created", types.join(","));
    assert.equal(types[types.length - 1], "response.completed",
      types.join(","));
    assert.ok(types.includes("response.output_text.delta"), "deltas");
    assert.equal(text, answer("m-resp", prompt));
    const done = events[events.length - 1].response;
    assert.equal(done.status, "completed");
    assert.equal(done.output_text ?? done.output[0].content[0].text,
      answer("m-resp", prompt));
    // sequence numbers, where sent, only grow.
    const seq = events.map((e) => e.sequence_number).filter((n) => n != null);
    for (let i = 1; i < seq.length; i++)
      assert.ok(seq[i] > seq[i - 1], "sequence_number grows");

    // The SDK's stream helper assembles the final response itself.
    const helper = client.responses.stream(
      { model: "gpt-resp", input: "Helper stream" }, opts);
    const final = await helper.finalResponse();
    // This SDK's helper leaves output_text out: the assembled output item.
    assert.equal(final.status, "completed");
    assert.equal(final.output[0].content[0].text,
      answer("m-resp", "Helper stream"));
    return `${events.length} events`;
  },

  // The upstream dies half-way: the stream must not end as if complete.
  // modelgate ends it with response.failed (which the SDK yields as an
  // event) and then an `error` event, on which the SDK's iterator throws
  // an APIError: an application never takes the partial text for an answer.
  async responses_stream_die() {
    const prompt = "This response stream will die";
    const full = answer("m-resp-die", prompt);
    const stream = await client.responses.create(
      { model: "gpt-resp-die", input: prompt, stream: true }, opts);
    const events = [];
    let text = "";
    const err = await rejects(async () => {
      for await (const ev of stream) {
        events.push(ev);
        if (ev.type === "response.output_text.delta")
          text += ev.delta;
      }
      return { ended: "normally", events: events.map((e) => e.type) };
    }, OpenAI.APIError, { status: undefined }, "iterating a dying stream");
    // The `error` event is OpenAI's shape (code and message at the top);
    // this SDK takes the error object from data.error, so only the message
    // reaches the APIError, and its code stays undefined.
    assert.match(err.message, /incomplete answer/);
    const types = events.map((e) => e.type);
    assert.equal(types[0], "response.created", types.join(","));
    assert.ok(!types.includes("response.completed"),
      `a dying stream completed: ${types.join(",")}`);
    assert.ok(text.length > 0, `no delta before the failure: ${types}`);
    assert.ok(full.startsWith(text) && text.length < full.length,
      `partial text ${JSON.stringify(text)}`);
    const last = events[events.length - 1];
    assert.equal(last.type, "response.failed", types.join(","));
    assert.equal(last.response.status, "failed");
    // modelgate's code, as on the chat stream (not one of OpenAI's enum for
    // response.error.code; the SDK does not check it at run time).
    assert.equal(last.response.error?.code, "upstream_truncated",
      JSON.stringify(last.response.error));

    // The stream helper rejects too.
    const helper = client.responses.stream(
      { model: "gpt-resp-die", input: prompt }, opts);
    let helperErr = null;
    try {
      await helper.finalResponse();
    } catch (e) {
      helperErr = e;
    }
    assert.ok(helperErr instanceof OpenAI.OpenAIError,
      "the stream helper resolved on a dying stream");
    return `response.failed, then ${err.constructor.name} "${err.message}" ` +
      `after ${text.length} of ${full.length} characters`;
  },

  // A response made through the flag's canary: retrieve() and the input
  // items reach the target that made it (the mock that stored it answers).
  async responses_retrieve() {
    const prompt = "Remember this one";
    const { data: made, response } = await client.responses
      .create({ model: "gpt-resp-flag", input: prompt }, opts)
      .withResponse();
    decision(response.headers, { served: "r-canary", flag: "resp-flag",
      variant: "canary" }, "made on the canary");
    const got = await client.responses.retrieve(made.id, {}, opts);
    assert.equal(got.id, made.id, "the id the client was given");
    // retrieve() in this SDK does not add output_text: the output item.
    assert.equal(got.output[0].content[0].text, answer("m-r-canary", prompt));
    const items = [];
    for await (const it of client.responses.inputItems.list(made.id, {}, opts))
      items.push(it);
    assert.ok(items.length >= 1, "input items");
    assert.equal(items[0].content[0].text, prompt);
    await rejects(() => client.responses.retrieve("resp_not_one_of_ours", {},
      opts), OpenAI.NotFoundError, { status: 404 }, "an unknown id");
    return made.id;
  },

  // previous_response_id chains across a kill of the flag. "resp-flag":
  // the canary and the off variant are the same upstream with the same key,
  // so the chain goes on (on the off variant). "resp-split": the off
  // variant is another account (another key), which cannot see the stored
  // response: conversation_unavailable, a BadRequestError for the SDK.
  async responses_chain() {
    const first = await client.responses.create(
      { model: "gpt-resp-flag", input: "Chain one" }, opts);
    const second = await client.responses.create({ model: "gpt-resp-flag",
      input: "Chain two", previous_response_id: first.id }, opts);
    assert.match(second.output_text, /Chain two/);
    assert.match(second.output_text, /\(after resp_/, "the mock had it");
    const split1 = await client.responses.create(
      { model: "gpt-resp-split", input: "Split one" }, opts);

    await adminKill("resp-flag");
    await adminKill("resp-split");

    // Same upstream: the conversation continues, served by the off variant.
    const { data: third, response } = await client.responses
      .create({ model: "gpt-resp-flag", input: "Chain three",
        previous_response_id: second.id }, opts)
      .withResponse();
    assert.match(third.output_text, /Chain three/);
    assert.match(third.output_text, /\(after resp_/, "context kept");
    assert.equal(response.headers.get("x-modelgate-served-by"), "r-stable");

    // Another upstream account: a clear error, never a silent new chat.
    const err = await rejects(() => client.responses.create({
      model: "gpt-resp-split", input: "Split two",
      previous_response_id: split1.id }, opts),
    OpenAI.BadRequestError,
    { status: 400, code: "conversation_unavailable",
      param: "previous_response_id" }, "chain across a kill to another key");
    // A new conversation on the same alias still works.
    const fresh = await client.responses.create(
      { model: "gpt-resp-split", input: "Fresh start" }, opts);
    assert.equal(fresh.output_text, answer("m-split-stable", "Fresh start"));
    return `kept across the kill; other account: ${err.message}`;
  },
});

// ---- main ------------------------------------------------------------------

const watchdog = setTimeout(() => {
  console.error(`FAIL: still running after ${RUN_MS} ms (a call hangs)`);
  process.exit(3);
}, RUN_MS);
watchdog.unref();

console.log(`openai-node ${VERSION} on node ${process.version}`);
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
