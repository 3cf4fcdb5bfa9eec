// The npm openai client through the scenarios of sdk_test.go. Env:
// TOLLGATE_URL, KEY_ALL, KEY_GPT4, KEY_RPM1, KEY_NOBUDGET. Exits non-zero on
// the first failed check.
import OpenAI from "openai";
import assert from "node:assert/strict";

const base = process.env.TOLLGATE_URL + "/v1";
const client = (key) => new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });
const all = client(process.env.KEY_ALL);
const params = (model) => ({
  model,
  max_tokens: 16,
  messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "hello there" }],
});

async function expectStatus(promise, status, what) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, `${what}: not an APIError: ${err}`);
    assert.equal(err.status, status, `${what}: status`);
    return err;
  }
  assert.fail(`${what}: no error`);
}

for (const model of ["gpt-4", "claude"]) {
  const r = await all.chat.completions.create(params(model));
  assert.equal(r.choices[0].message.content, "Hello! You said: hello there", `${model} chat`);
  assert.equal(r.usage.completion_tokens, 5, `${model} usage`);

  const stream = await all.chat.completions.create({ ...params(model), stream: true, stream_options: { include_usage: true } });
  let text = "", usage = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) text += c.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, "Hello! You said: hello there", `${model} stream`);
  assert.equal(usage?.completion_tokens, 5, `${model} stream usage`);
}

// The Responses API: gpt-4 is passed through, claude translated.
const rparams = (model) => ({ model, instructions: "Be brief.", input: "hello there", max_output_tokens: 16 });
for (const model of ["gpt-4", "claude"]) {
  const r = await all.responses.create(rparams(model));
  assert.equal(r.output_text, "Hello! You said: hello there", `${model} response`);
  assert.equal(r.usage.output_tokens, 5, `${model} response usage`);

  const stream = await all.responses.create({ ...rparams(model), stream: true });
  let text = "", completed = null;
  for await (const ev of stream) {
    if (ev.type === "response.output_text.delta") text += ev.delta;
    if (ev.type === "response.completed") completed = ev.response;
  }
  assert.equal(text, "Hello! You said: hello there", `${model} response stream`);
  assert.equal(completed?.usage?.output_tokens, 5, `${model} response stream usage`);
}

const emb = await all.embeddings.create({ model: "text-embedding-3-small", input: ["one", "two"] });
assert.equal(emb.data.length, 2, "embeddings");

const models = await client(process.env.KEY_GPT4).models.list();
assert.deepEqual(models.data.map((m) => m.id), ["gpt-4"], "models of a gpt-4 key");

await expectStatus(client("sk-not-a-key").chat.completions.create(params("gpt-4")), 401, "401");
const e403 = await expectStatus(client(process.env.KEY_GPT4).chat.completions.create(params("claude")), 403, "403");
assert.ok(e403 instanceof OpenAI.PermissionDeniedError, "403 class");
await expectStatus(all.chat.completions.create(params("no-such-model")), 404, "404");
const e400 = await expectStatus(client(process.env.KEY_NOBUDGET).chat.completions.create(params("gpt-4")), 400, "budget");
assert.equal(e400.type, "budget_exceeded", "budget error type");
const rpm = client(process.env.KEY_RPM1);
await rpm.chat.completions.create(params("gpt-4")).catch(() => {}); // may already be spent by the Go run
const e429 = await expectStatus(rpm.chat.completions.create(params("gpt-4")), 429, "429");
assert.ok(e429 instanceof OpenAI.RateLimitError, "429 class");

console.log("node openai client: all scenarios passed");
