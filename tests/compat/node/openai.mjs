// The official `openai` Node SDK pointed at the gateway's chat completions, used as its docs show.
//
// Usage: node openai.mjs BASE_URL KEY CHAT_MODEL EMBED_MODEL PREFIX
//   BASE_URL     e.g. http://127.0.0.1:8080/demo/assistant/v1
//   KEY          a key that may use both models
//   CHAT_MODEL   a chat model with tools
//   EMBED_MODEL  an embeddings model, or "-" when the backend serves none
//   PREFIX       prefix of the x-request-id each call sends, so the log can be matched
//
// Asserts what the SDK itself must do (parse every answer and chunk, throw its error classes)
// and prints one JSON object of what it saw for dataplane/tests/compat.rs to check against the
// gateway's access log. Backend-dependent checks (is JSON mode JSON?) are left to the driver.
import assert from 'node:assert/strict';

import OpenAI from 'openai';

const [baseURL, apiKey, model, embedModel, prefix] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const seen = {};

const requestId = (name) => `${prefix}-${name}`;
const withId = (name) => ({ headers: { 'x-request-id': requestId(name) } });
const usageOf = (usage) => ({
  prompt_tokens: usage.prompt_tokens,
  completion_tokens: usage.completion_tokens,
  total_tokens: usage.total_tokens,
});

// A completion cut short by its token limit.
const completion = await client.chat.completions.create(
  {
    model,
    messages: [
      { role: 'developer', content: 'You are terse.' },
      { role: 'user', content: 'Say hello in five words.' },
    ],
    max_completion_tokens: 5,
  },
  withId('create'),
);
assert.equal(completion.object, 'chat.completion');
assert.equal(completion._request_id, requestId('create'), 'the gateway echoes x-request-id');
assert.ok(completion.choices[0].message.content, JSON.stringify(completion));
seen.create = {
  content: completion.choices[0].message.content,
  finish_reason: completion.choices[0].finish_reason,
  ...usageOf(completion.usage),
};

// Streaming with the usage chunk.
const stream = await client.chat.completions.create(
  {
    model,
    messages: [{ role: 'user', content: 'Tell me a short story.' }],
    max_completion_tokens: 6,
    stream: true,
    stream_options: { include_usage: true },
  },
  withId('stream'),
);
let text = '';
let finishReason = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  text += chunk.choices[0]?.delta?.content || '';
  finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
  if (chunk.usage) {
    assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
    usage = chunk.usage;
  }
}
assert.ok(text, 'the stream carried text');
assert.ok(usage, 'include_usage brings a usage chunk');
seen.stream = { content: text, chunks, finish_reason: finishReason, ...usageOf(usage) };

// Function calling: the model calls the tool, then answers from its result.
const tools = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Get the current weather in a city.',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' } },
        required: ['city'],
        additionalProperties: false,
      },
    },
  },
];
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const called = await client.chat.completions.create({ model, messages, tools }, withId('tool'));
const call = called.choices[0].message.tool_calls?.[0];
assert.ok(call, JSON.stringify(called));
assert.equal(call.type, 'function');
seen.tool = {
  finish_reason: called.choices[0].finish_reason,
  name: call.function.name,
  arguments: JSON.parse(call.function.arguments),
  ...usageOf(called.usage),
};
messages.push(called.choices[0].message);
messages.push({ role: 'tool', tool_call_id: call.id, content: '18 degrees and sunny' });
const answered = await client.chat.completions.create({ model, messages, tools }, withId('tool-result'));
seen.tool_result = {
  finish_reason: answered.choices[0].finish_reason,
  content: answered.choices[0].message.content,
  ...usageOf(answered.usage),
};

// JSON mode.
const json = await client.chat.completions.create(
  {
    model,
    messages: [{ role: 'user', content: 'Give me a JSON object with a greeting.' }],
    response_format: { type: 'json_object' },
  },
  withId('json'),
);
const content = json.choices[0].message.content;
let parsed = null;
try {
  parsed = JSON.parse(content);
} catch {
  parsed = null;
}
seen.json = {
  content,
  is_object: parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed),
  finish_reason: json.choices[0].finish_reason,
  ...usageOf(json.usage),
};

// Embeddings: the SDK asks for base64 unless told otherwise, and decodes it.
if (embedModel !== '-') {
  const embedding = await client.embeddings.create(
    { model: embedModel, input: ['The food was delicious.', 'The waiter was friendly.'] },
    withId('embed'),
  );
  assert.equal(embedding.data.length, 2);
  for (const item of embedding.data) {
    assert.ok(Array.isArray(item.embedding) && item.embedding.every(Number.isFinite), JSON.stringify(item));
  }
  seen.embed = {
    count: embedding.data.length,
    dimensions: embedding.data[0].embedding.length,
    prompt_tokens: embedding.usage.prompt_tokens,
  };
}

// The model list, through the SDK's auto-pagination.
const models = [];
for await (const listed of client.models.list()) {
  models.push(listed.id);
}
seen.models = models;

// Errors arrive as the SDK's classes.
const failure = async (call, kind) => {
  try {
    await call();
  } catch (err) {
    if (err instanceof OpenAI.APIError) {
      assert.ok(err instanceof kind, `${err.name} is not a ${kind.name}: ${err.message}`);
      // The README prints `err.request_id`; this version's APIError names it `requestID`.
      return {
        class: err.constructor.name,
        status: err.status,
        code: err.code,
        type: err.type,
        request_id: err.requestID,
      };
    }
    throw err;
  }
  throw new Error('the call must fail');
};
seen.not_found = await failure(
  () =>
    client.chat.completions.create(
      { model: 'no-such-model', messages: [{ role: 'user', content: 'Hi' }] },
      withId('not-found'),
    ),
  OpenAI.NotFoundError,
);
const stranger = new OpenAI({ baseURL, apiKey: 'sl_nobody_000000000000000', maxRetries: 0 });
seen.bad_key = await failure(
  () => stranger.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }] }),
  OpenAI.AuthenticationError,
);

console.log(JSON.stringify(seen));
