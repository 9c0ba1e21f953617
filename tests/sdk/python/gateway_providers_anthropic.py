"""The official `anthropic` SDK against the gateway's Messages API, served by an Anthropic upstream
(passed through byte for byte), by backends of mixed types (failover), and by a Gemini upstream
(translated twice).

Usage: python gateway_providers_anthropic.py BASE_URL KEY
  BASE_URL  e.g. http://127.0.0.1:8080/acme/chat (the SDK adds /v1/messages)
  KEY       a key that may use the models claude, gemini, mixed-a and mixed-b

Prints one JSON object of what it saw, by call, for the Rust test to check against the gateway's
access log. Each call sends its own x-request-id (`anth-<call>`).
"""

import json
import sys

import anthropic

base_url, key = sys.argv[1:3]
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
tools = [{"name": "get_weather", "description": "Current weather in a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
seen = {}


def usage_of(usage):
    return {"input_tokens": usage.input_tokens, "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
            "output_tokens": usage.output_tokens}


def rid(name):
    return {"x-request-id": f"anth-{name}"}


def create(name, model, **kwargs):
    message = client.messages.create(model=model, extra_headers=rid(name), **kwargs)
    assert message.type == "message" and message.role == "assistant", message
    seen[name] = {"id": message.id, "model": message.model, "stop_reason": message.stop_reason,
                  "types": [b.type for b in message.content], **usage_of(message.usage)}
    return message


hello = [{"role": "user", "content": "Say hello."}]
create("create", "claude", max_tokens=5, system="You are terse.", messages=hello)
message = create("tool", "claude", max_tokens=200, tools=tools, messages=[{"role": "user", "content": "Weather?"}])
call = next(block for block in message.content if block.type == "tool_use")
seen["tool"]["input"] = call.input

with client.messages.stream(model="claude", max_tokens=7, messages=hello, extra_headers=rid("stream")) as stream:
    events = [event.type for event in stream]
    final = stream.get_final_message()
seen["stream"] = {"events": events, "id": final.id, "stop_reason": final.stop_reason, **usage_of(final.usage)}

# Mixed backends: an OpenAI one that is down, then the Anthropic one; and the other way round.
create("mixed-a", "mixed-a", max_tokens=5, messages=hello)
create("mixed-b", "mixed-b", max_tokens=5, messages=hello)
# A Gemini upstream behind the Messages API: Messages -> chat -> Gemini, and back.
create("gemini", "gemini", max_tokens=5, messages=hello)

print(json.dumps(seen))
