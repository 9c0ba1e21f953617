"""The official `openai` SDK against the gateway's chat completions, served by Anthropic and Gemini
upstreams (the gateway translates both ways).

Usage: python gateway_providers_openai.py BASE_URL KEY MODEL...
  BASE_URL  e.g. http://127.0.0.1:8080/acme/chat/v1
  KEY       a key that may use every MODEL
  MODEL     exposed models to drive, each served by a translated upstream

Asserts what the SDK itself must be able to do (parse every response and chunk, see tool calls
and usage), and prints one JSON object of what it saw, by model, for the Rust test to check
against the gateway's access log. Each call sends its own x-request-id (`<model>-<call>`).
"""

import json
import sys

from openai import OpenAI

base_url, key, *models = sys.argv[1:]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
seen = {}


def usage_of(usage):
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "cached_tokens": cached or 0}


for model in models:
    calls = {}

    def rid(name):
        return {"x-request-id": f"{model}-{name}"}

    # Cut short by max_tokens.
    chat = client.chat.completions.create(
        model=model, max_tokens=5,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
        extra_headers=rid("create"))
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-"), chat
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content, chat
    calls["create"] = {"finish_reason": chat.choices[0].finish_reason, **usage_of(chat.usage)}

    # Ends by itself.
    chat = client.chat.completions.create(
        model=model, max_tokens=500, temperature=0.5, user="user-1",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Tell me about Paris."}]}],
        extra_headers=rid("natural"))
    calls["natural"] = {"finish_reason": chat.choices[0].finish_reason, **usage_of(chat.usage)}

    # Streamed, usage asked for: every chunk parses, the last one carries the usage.
    pieces, finish, usage = [], None, None
    for chunk in client.chat.completions.create(
            model=model, max_tokens=6, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Stream a sentence."}], extra_headers=rid("stream")):
        if chunk.usage is not None:
            assert not chunk.choices, chunk
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces).strip() and usage is not None, (pieces, usage)
    calls["stream"] = {"finish_reason": finish, "text": "".join(pieces), **usage_of(usage)}

    # Streamed without usage: no usage chunk reaches the client.
    chunks = list(client.chat.completions.create(
        model=model, max_tokens=4, stream=True, messages=[{"role": "user", "content": "Hi"}],
        extra_headers=rid("stream-plain")))
    assert chunks and all(c.choices for c in chunks), "a usage-only chunk reached a client that did not ask"

    # Tools: a call, then its result answered.
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    chat = client.chat.completions.create(model=model, max_tokens=200, tools=tools, messages=messages,
                                          extra_headers=rid("tool"))
    message = chat.choices[0].message
    assert message.tool_calls, chat
    call = message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    calls["tool"] = {"finish_reason": chat.choices[0].finish_reason, "name": call.function.name,
                     "arguments": arguments, **usage_of(chat.usage)}
    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    chat = client.chat.completions.create(model=model, max_tokens=200, tools=tools, messages=messages,
                                          extra_headers=rid("tool-result"))
    calls["tool_result"] = {"finish_reason": chat.choices[0].finish_reason,
                            "content": chat.choices[0].message.content, **usage_of(chat.usage)}

    # A streamed tool call: the arguments arrive as deltas.
    names, arguments, finish, usage = [], "", None, None
    for chunk in client.chat.completions.create(
            model=model, max_tokens=200, tools=tools, tool_choice="required", stream=True,
            stream_options={"include_usage": True}, messages=[{"role": "user", "content": "Weather in Rome?"}],
            extra_headers=rid("tool-stream")):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                arguments += (delta.function.arguments or "") if delta.function else ""
    calls["tool_stream"] = {"finish_reason": finish, "names": names, "arguments": json.loads(arguments),
                            **usage_of(usage)}
    seen[model] = calls

print(json.dumps(seen))
