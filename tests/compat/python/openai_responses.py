"""The official `openai` SDK's Responses API pointed at the gateway, used as its docs show.

Usage: python openai_responses.py BASE_URL KEY
  BASE_URL  e.g. http://127.0.0.1:8080/acme/chat/v1
  KEY       a key that may use model m-ok

Prints one JSON object of what the SDK saw for the Rust test to check against the access log.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1:3]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
seen = {}


def usage_of(response):
    return {"input": response.usage.input_tokens, "output": response.usage.output_tokens}


response = client.responses.create(
    model="m-ok",
    instructions="You are terse.",
    input="Say hello in five words.",
    max_output_tokens=5,
    extra_headers={"x-request-id": "py-resp-create"},
)
assert response.output_text, response
assert response.status == "incomplete", response
seen["create"] = {"text": response.output_text, "status": response.status, **usage_of(response)}

events = []
final = None
stream = client.responses.create(
    model="m-ok",
    input=[{"role": "user", "content": "Tell me a short story."}],
    max_output_tokens=8,
    stream=True,
    extra_headers={"x-request-id": "py-resp-stream"},
)
text = ""
for event in stream:
    events.append(event.type)
    if event.type == "response.output_text.delta":
        text += event.delta
    if event.type in ("response.completed", "response.incomplete"):
        final = event.response
assert final is not None, events
assert final.output_text == text, (final.output_text, text)
seen["stream"] = {"text": text, "events": events, **usage_of(final)}

with client.responses.stream(
    model="m-ok", input="Hi", extra_headers={"x-request-id": "py-resp-helper"}
) as helper:
    for _ in helper:
        pass
    helped = helper.get_final_response()
assert helped.output_text, helped
seen["helper"] = usage_of(helped)

try:
    client.responses.create(model="m-ok", input="Again", previous_response_id="resp_123")
    raise AssertionError("previous_response_id must be refused")
except openai.BadRequestError as error:
    assert error.body["param"] == "previous_response_id", error.body
    seen["previous"] = error.body["code"]

print(json.dumps(seen))
