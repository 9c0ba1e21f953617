"""The official `openai` SDK pointed at the Sluice quickstart exactly as the README shows.

Usage: python gateway_openai.py BASE_URL   (e.g. http://127.0.0.1:8080/demo/assistant/v1)
Exits non-zero, with the failed assertion, if the SDK cannot read a response or an error is not
the exception class users catch.
"""

import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="sl_demo_quickstartkey", max_retries=0)

# Chat.
chat = client.chat.completions.create(
    model="demo-chat",
    messages=[{"role": "user", "content": "Say hello in five words."}],
    max_tokens=16,
)
assert chat.choices[0].message.content, chat
assert chat.usage.completion_tokens > 0, chat.usage
assert chat.usage.prompt_tokens > 0, chat.usage

# Streaming chat: every chunk parses; text arrives; no usage chunk unless asked for.
pieces, chunks = [], 0
for chunk in client.chat.completions.create(
    model="demo-chat",
    messages=[{"role": "user", "content": "Stream a short sentence."}],
    max_tokens=12,
    stream=True,
):
    chunks += 1
    assert chunk.choices, "a usage-only chunk reached a client that did not ask for it"
    pieces.append(chunk.choices[0].delta.content or "")
assert chunks >= 3 and "".join(pieces).strip(), (chunks, pieces)

# Streaming with usage asked for: the last chunk carries it.
stream = client.chat.completions.create(
    model="demo-chat-latest",
    messages=[{"role": "user", "content": "Hi"}],
    max_tokens=5,
    stream=True,
    stream_options={"include_usage": True},
)
last = None
for chunk in stream:
    last = chunk
assert last is not None and last.usage is not None and last.usage.completion_tokens == 5, last

# Embeddings.
embedding = client.embeddings.create(model="demo-embed", input=["first text", "second text"])
assert len(embedding.data) == 2, embedding
assert len(embedding.data[0].embedding) == 384, len(embedding.data[0].embedding)
assert embedding.data[0].embedding != embedding.data[1].embedding

# Models.
models = client.models.list()
ids = sorted(m.id for m in models.data)
assert ids == ["demo-chat", "demo-embed", "demo-image"], ids
assert client.models.retrieve("demo-chat-latest").id == "demo-chat"

# Errors users catch by class.
try:
    OpenAI(base_url=base_url, api_key="sl_demo_wrongkey00000", max_retries=0).models.list()
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as error:
    assert error.status_code == 401 and error.code == "invalid_api_key", error

try:
    OpenAI(base_url=base_url, api_key="sl_demo_readonlykey", max_retries=0).chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "hi"}]
    )
    raise AssertionError("a key without the inference scope called a model")
except openai.PermissionDeniedError as error:
    assert error.status_code == 403 and error.code == "scope_insufficient", error

try:
    client.chat.completions.create(model="gpt-imaginary", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as error:
    assert error.status_code == 404 and error.code == "model_not_found", error

print("gateway_openai.py: all checks passed")
