"""The official `google-genai` SDK pointed at the gateway's Gemini API, used as its docs show.

Usage: python gemini_genai.py BASE_URL KEY
  BASE_URL  e.g. http://127.0.0.1:8080/acme/chat (the SDK adds /v1beta/models/...)
  KEY       a key that may use models m-ok and m-embed

Asserts what the SDK itself must be able to do (parse every response and chunk, raise its
error classes), and prints one JSON object of what it saw for the Rust test to check against
the gateway's access log. Each call sends its own x-request-id.
"""

import json
import sys

from google import genai
from google.genai import errors, types

base_url, key = sys.argv[1:3]
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url))
seen = {}


def config(request_id, **kwargs):
    return types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-request-id": request_id}), **kwargs
    )


def usage_of(metadata):
    return {"prompt": metadata.prompt_token_count, "output": metadata.candidates_token_count}


response = client.models.generate_content(
    model="m-ok",
    contents="Say hello in five words.",
    config=config("genai-generate", system_instruction="You are terse.", max_output_tokens=5),
)
assert response.text, response
assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS, response
seen["generate"] = {"text": response.text, **usage_of(response.usage_metadata)}

text = ""
last = None
for chunk in client.models.generate_content_stream(
    model="m-ok",
    contents="Tell me a short story.",
    config=config("genai-stream", max_output_tokens=8),
):
    text += chunk.text or ""
    last = chunk
assert text, "the stream carried text"
assert last.usage_metadata is not None, last
seen["stream"] = {"text": text, **usage_of(last.usage_metadata)}

count = client.models.count_tokens(model="m-ok", contents="How many tokens is this sentence?")
assert count.total_tokens > 0, count
seen["count"] = count.total_tokens

# Embeddings, served by the endpoint's OpenAI embeddings model (the SDK calls batchEmbedContents).
result = client.models.embed_content(
    model="m-embed",
    contents=["What is the meaning of life?", "What is the purpose of existence?"],
    config=types.EmbedContentConfig(
        output_dimensionality=16,
        http_options=types.HttpOptions(headers={"x-request-id": "genai-embed"}),
    ),
)
assert len(result.embeddings) == 2, result
assert all(len(embedding.values) == 16 for embedding in result.embeddings), result
assert result.embeddings[0].values != result.embeddings[1].values, result
seen["embed"] = {
    "count": len(result.embeddings),
    "dimensions": len(result.embeddings[0].values),
    "prompt": result.usage_metadata.prompt_token_count,
}

# The SDK's default API version is v1, where the gateway serves generateContent and countTokens;
# listing models in Gemini's shape is under v1beta (/v1/models is OpenAI's list).
beta = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta"))
names = [model.name for model in beta.models.list()]
assert "models/m-ok" in names, names
seen["models"] = names

try:
    beta.models.generate_content(model="nope", contents="Hi")
    raise AssertionError("an unknown model must fail")
except errors.ClientError as error:
    assert error.code == 404, error
    assert error.status == "NOT_FOUND", error
    seen["not_found"] = error.status

print(json.dumps(seen))
