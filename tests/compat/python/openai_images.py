"""The official `openai` SDK's image generation pointed at the gateway, used as its docs show.

Usage: python openai_images.py BASE_URL KEY
  BASE_URL  e.g. http://127.0.0.1:8080/acme/chat/v1
  KEY       a key that may use models m-image (images) and m-ok (chat only)

Asserts what the SDK must be able to do (parse the answer, decode the image, raise its error
class), and prints one JSON object of what it saw for the Rust test to check against the
gateway's access log.
"""

import base64
import json
import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1:3]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
seen = {}

result = client.images.generate(
    model="m-image",
    prompt="A cute baby sea otter",
    n=1,
    size="1024x1024",
    extra_headers={"x-request-id": "py-image"},
)
image_bytes = base64.b64decode(result.data[0].b64_json)
assert image_bytes.startswith(b"\x89PNG\r\n\x1a\n"), image_bytes[:8]
seen["image"] = {
    "count": len(result.data),
    "input": result.usage.input_tokens,
    "output": result.usage.output_tokens,
}

linked = client.images.generate(model="m-image", prompt="A lighthouse at dusk", response_format="url", n=2)
assert len(linked.data) == 2, linked
assert all(image.url.startswith("data:image/png;base64,") for image in linked.data), linked
seen["urls"] = len(linked.data)

try:
    client.images.generate(model="m-ok", prompt="A chat model draws nothing")
    raise AssertionError("a chat model must not generate images")
except openai.BadRequestError as error:
    assert error.status_code == 400, error
    seen["chat_model"] = error.code

print(json.dumps(seen))
