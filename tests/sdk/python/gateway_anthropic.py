"""The official `anthropic` SDK pointed at the gateway's Messages API, used as its docs show.

Usage: python gateway_anthropic.py BASE_URL KEY TIGHT_KEY EMBED_ONLY_KEY
  BASE_URL        e.g. http://127.0.0.1:8080/acme/chat (the SDK adds /v1/messages)
  KEY             a key that may use model m-ok
  TIGHT_KEY       a key whose tier allows one request per minute
  EMBED_ONLY_KEY  a key that may not use m-ok

Asserts what the SDK itself must be able to do (parse every response and event, raise the
usual exception classes), and prints one JSON object of what it saw for the Rust test to check
against the gateway's access log. Each call sends its own x-request-id so the log can be matched.
"""

import json
import sys

import anthropic

base_url, key, tight_key, embed_only_key = sys.argv[1:5]
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
seen = {}


def usage_of(message):
    return {
        "input_tokens": message.usage.input_tokens,
        "cache_read_input_tokens": message.usage.cache_read_input_tokens or 0,
        "output_tokens": message.usage.output_tokens,
    }


def rid(name):
    return {"x-request-id": name}


# A plain message, cut short by max_tokens.
message = client.messages.create(
    model="m-ok",
    max_tokens=5,
    system="You are terse.",
    messages=[{"role": "user", "content": "Say hello."}],
    extra_headers=rid("anth-create"),
)
assert message.type == "message" and message.role == "assistant", message
assert message.id.startswith("msg_"), message.id
assert message.content and message.content[0].type == "text" and message.content[0].text, message
seen["create"] = {"stop_reason": message.stop_reason, **usage_of(message)}

# A message that ends by itself, with system blocks and a multi-block user turn.
message = client.messages.create(
    model="m-ok",
    max_tokens=500,
    system=[{"type": "text", "text": "You are terse."}],
    messages=[
        {"role": "user", "content": [{"type": "text", "text": "Describe this."},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "iVBORw0KGgo="}}]},
    ],
    stop_sequences=["NEVER-SEEN"],
    extra_body={"temperature": 0.2},  # this SDK version has no sampling keyword arguments
    metadata={"user_id": "user-42"},
    extra_headers=rid("anth-natural"),
)
seen["natural"] = {"stop_reason": message.stop_reason, **usage_of(message)}

# Streaming, as the docs show.
texts = []
with client.messages.stream(
    model="m-ok",
    max_tokens=500,
    messages=[{"role": "user", "content": "Tell me a story."}],
    extra_headers=rid("anth-stream"),
) as stream:
    for text in stream.text_stream:
        texts.append(text)
    final = stream.get_final_message()
assert len(texts) >= 3 and "".join(texts) == final.content[0].text, (texts, final)
seen["stream"] = {"pieces": len(texts), "stop_reason": final.stop_reason, **usage_of(final)}

# Raw events of a stream: the event sequence Anthropic documents.
events = []
with client.messages.create(
    model="m-ok", max_tokens=3, messages=[{"role": "user", "content": "Hi"}], stream=True,
    extra_headers=rid("anth-events"),
) as raw:
    for event in raw:
        events.append(event.type)
seen["events"] = events

# Tools: a forced call, its parsed input, then the tool result sent back.
tools = [{
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
question = {"role": "user", "content": "What is the weather in Paris?"}
message = client.messages.create(
    model="m-ok", max_tokens=200, tools=tools, tool_choice={"type": "tool", "name": "get_weather"},
    messages=[question], extra_headers=rid("anth-tool"),
)
calls = [block for block in message.content if block.type == "tool_use"]
assert len(calls) == 1 and calls[0].name == "get_weather" and isinstance(calls[0].input, dict), message
seen["tool"] = {"stop_reason": message.stop_reason, "input": calls[0].input, "id": calls[0].id}

answer = client.messages.create(
    model="m-ok", max_tokens=200, tools=tools,
    messages=[question, {"role": "assistant", "content": message.content},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id,
                                            "content": "18 degrees and sunny"}]}],
    extra_headers=rid("anth-tool-result"),
)
seen["tool_result"] = {"stop_reason": answer.stop_reason, "types": [b.type for b in answer.content]}

# Tools, streamed: input_json_delta events build the input.
with client.messages.stream(
    model="m-ok", max_tokens=200, tools=tools, tool_choice={"type": "any"}, messages=[question],
    extra_headers=rid("anth-tool-stream"),
) as stream:
    deltas = [e.type for e in stream if e.type == "input_json"]
    final = stream.get_final_message()
calls = [block for block in final.content if block.type == "tool_use"]
assert len(calls) == 1 and isinstance(calls[0].input, dict), final
seen["tool_stream"] = {"stop_reason": final.stop_reason, "input": calls[0].input, "json_deltas": len(deltas),
                       **usage_of(final)}

# count_tokens.
count = client.messages.count_tokens(
    model="m-ok", system="You are terse.", messages=[{"role": "user", "content": "Say hello."}],
)
longer = client.messages.count_tokens(
    model="m-ok", system="You are terse.", messages=[{"role": "user", "content": "Say hello. " * 50}],
)
seen["count_tokens"] = [count.input_tokens, longer.input_tokens]


def error_of(call):
    try:
        call()
    except anthropic.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "type": e.body["error"]["type"],
                "message": e.body["error"]["message"]}
    raise AssertionError("no error")


hello = [{"role": "user", "content": "Hi"}]
seen["errors"] = {
    "bad_key": error_of(lambda: anthropic.Anthropic(base_url=base_url, api_key="sk-ant-wrong", max_retries=0)
                        .messages.create(model="m-ok", max_tokens=5, messages=hello)),
    "unknown_model": error_of(lambda: client.messages.create(model="no-such-model", max_tokens=5, messages=hello)),
    "not_allowed": error_of(lambda: anthropic.Anthropic(base_url=base_url, api_key=embed_only_key, max_retries=0)
                            .messages.create(model="m-ok", max_tokens=5, messages=hello)),
    "count_unknown_model": error_of(lambda: client.messages.count_tokens(model="no-such-model", messages=hello)),
}
tight = anthropic.Anthropic(base_url=base_url, api_key=tight_key, max_retries=0)
tight.messages.create(model="m-ok", max_tokens=5, messages=hello)
seen["errors"]["rate_limited"] = error_of(lambda: tight.messages.create(model="m-ok", max_tokens=5, messages=hello))

print(json.dumps(seen))
