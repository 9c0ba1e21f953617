// The official `@anthropic-ai/sdk` Node SDK pointed at the gateway's Messages API, used as its docs
// show.
//
// Usage: node anthropic.mjs BASE_URL KEY MODEL PREFIX
//   BASE_URL  the endpoint's URL without /v1, e.g. http://127.0.0.1:8080/demo/assistant (the SDK
//             adds /v1/messages)
//   KEY       a key that may use MODEL
//   MODEL     a chat model with tools
//   PREFIX    prefix of the x-request-id each call sends, so the log can be matched
//
// Asserts what the SDK itself must do (parse every message and event, run its stream helper,
// throw its error classes) and prints one JSON object of what it saw for
// dataplane/tests/compat.rs to check against the gateway's access log.
import assert from 'node:assert/strict';

import Anthropic from '@anthropic-ai/sdk';

const [baseURL, apiKey, model, prefix] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });
const seen = {};

const requestId = (name) => `${prefix}-${name}`;
const withId = (name) => ({ headers: { 'x-request-id': requestId(name) } });
const usageOf = (usage) => ({
  input_tokens: usage.input_tokens,
  cache_creation_input_tokens: usage.cache_creation_input_tokens ?? 0,
  cache_read_input_tokens: usage.cache_read_input_tokens ?? 0,
  output_tokens: usage.output_tokens,
});

// A message cut short by max_tokens.
const message = await client.messages.create(
  {
    max_tokens: 5,
    system: 'You are terse.',
    messages: [{ role: 'user', content: 'Say hello in five words.' }],
    model,
  },
  withId('create'),
);
assert.equal(message.type, 'message');
assert.equal(message.role, 'assistant');
assert.equal(message.content[0].type, 'text');
assert.ok(message.content[0].text, JSON.stringify(message));
seen.create = { text: message.content[0].text, stop_reason: message.stop_reason, ...usageOf(message.usage) };

// The stream helper: text events as they come, then the accumulated message.
const pieces = [];
const stream = client.messages
  .stream(
    {
      max_tokens: 8,
      messages: [{ role: 'user', content: 'Tell me a short story.' }],
      model,
    },
    withId('stream'),
  )
  .on('text', (text) => {
    pieces.push(text);
  });
const final = await stream.finalMessage();
assert.ok(pieces.length >= 2, `text events: ${JSON.stringify(pieces)}`);
assert.equal(pieces.join(''), final.content[0].text, 'the events add up to the final message');
seen.stream = {
  text: final.content[0].text,
  pieces: pieces.length,
  stop_reason: final.stop_reason,
  ...usageOf(final.usage),
};

// Tools: the model asks for a tool, then answers from its result.
const tools = [
  {
    name: 'get_weather',
    description: 'Get the current weather in a city.',
    input_schema: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    },
  },
];
const question = { role: 'user', content: 'What is the weather in Paris?' };
const asked = await client.messages.create(
  { max_tokens: 200, tools, messages: [question], model },
  withId('tool'),
);
const toolUse = asked.content.find((block) => block.type === 'tool_use');
assert.ok(toolUse, JSON.stringify(asked));
seen.tool = {
  stop_reason: asked.stop_reason,
  name: toolUse.name,
  input: toolUse.input,
  ...usageOf(asked.usage),
};
const answered = await client.messages.create(
  {
    max_tokens: 200,
    tools,
    messages: [
      question,
      { role: 'assistant', content: asked.content },
      {
        role: 'user',
        content: [{ type: 'tool_result', tool_use_id: toolUse.id, content: '18 degrees and sunny' }],
      },
    ],
    model,
  },
  withId('tool-result'),
);
seen.tool_result = {
  stop_reason: answered.stop_reason,
  types: answered.content.map((block) => block.type),
  ...usageOf(answered.usage),
};

// Token counting.
const count = await client.messages.countTokens({
  messages: [{ role: 'user', content: 'How many tokens is this sentence?' }],
  model,
});
assert.ok(Number.isInteger(count.input_tokens) && count.input_tokens > 0, JSON.stringify(count));
seen.count = count.input_tokens;

// Errors arrive as the SDK's classes.
const failure = async (call, kind) => {
  try {
    await call();
  } catch (err) {
    if (err instanceof Anthropic.APIError) {
      assert.ok(err instanceof kind, `${err.constructor.name} is not a ${kind.name}: ${err.message}`);
      return { class: err.constructor.name, status: err.status, type: err.error?.error?.type };
    }
    throw err;
  }
  throw new Error('the call must fail');
};
seen.not_found = await failure(
  () =>
    client.messages.create(
      { max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }], model: 'no-such-model' },
      withId('not-found'),
    ),
  Anthropic.NotFoundError,
);
const stranger = new Anthropic({ baseURL, apiKey: 'sl_nobody_000000000000000', maxRetries: 0 });
seen.bad_key = await failure(
  () => stranger.messages.create({ max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }], model }),
  Anthropic.AuthenticationError,
);

console.log(JSON.stringify(seen));
