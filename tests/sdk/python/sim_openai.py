"""The official `openai` SDK, used as users use it, against sluice-sim.

Usage: python sim_openai.py BASE_URL   (e.g. http://127.0.0.1:8000)
Exits non-zero, with the failed assertion, if the SDK cannot read a response or reads
something unexpected.
"""

import json
import math
import sys

import openai
from openai import OpenAI

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a river."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]


def chat(client: OpenAI) -> None:
    plain = client.chat.completions.create(model="sim-chat", messages=MESSAGES, max_tokens=12)
    assert plain.object == "chat.completion", plain.object
    assert plain.model == "sim-chat", plain.model
    choice = plain.choices[0]
    assert choice.finish_reason == "length", choice.finish_reason
    assert choice.message.role == "assistant"
    assert choice.message.content, choice.message
    assert plain.usage.completion_tokens == 12, plain.usage
    assert plain.usage.prompt_tokens > 0
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + 12

    stream = client.chat.completions.create(
        model="sim-chat",
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == [], chunk
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert len(pieces) == 12, pieces  # one token a chunk
    assert "".join(pieces) == choice.message.content, (pieces, choice.message.content)
    assert finish == "length", finish
    assert usage is not None and usage.completion_tokens == 12, usage
    # Same prompt again: its whole blocks come from the prefix cache.
    assert usage.prompt_tokens_details.cached_tokens > 0, usage

    # Without stream_options: no usage chunk.
    chunks = list(client.chat.completions.create(model="sim-chat", messages=MESSAGES, max_tokens=3, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)

    many = client.chat.completions.create(model="sim-chat", messages=MESSAGES, max_tokens=5, n=2)
    assert sorted(c.index for c in many.choices) == [0, 1], many.choices
    assert many.usage.completion_tokens == 10

    stopped = client.chat.completions.create(model="sim-chat", messages=MESSAGES, stop=[" "])
    assert " " not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def tools_and_json(client: OpenAI) -> None:
    ask = [{"role": "user", "content": "Weather in Lyon?"}]
    called = client.chat.completions.create(model="sim-chat", messages=ask, tools=TOOLS)
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather", call
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str), args

    stream = client.chat.completions.create(model="sim-chat", messages=ask, tools=TOOLS, stream=True)
    name, arguments, finish = None, "", None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name = tc.function.name or name
                arguments += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls", (name, finish)
    assert json.loads(arguments) == args

    answered = client.chat.completions.create(
        model="sim-chat",
        messages=ask
        + [
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
        ],
        tools=TOOLS,
    )
    assert answered.choices[0].message.content, answered

    doc = client.chat.completions.create(model="sim-chat", messages=ask, response_format={"type": "json_object"})
    assert isinstance(json.loads(doc.choices[0].message.content), dict)


def embeddings_and_models(client: OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it.
    packed = client.embeddings.create(model="sim-embed", input=["a cat", "a dog"])
    assert [d.index for d in packed.data] == [0, 1]
    vector = packed.data[0].embedding
    assert len(vector) == 1536, len(vector)
    assert abs(math.fsum(v * v for v in vector) - 1.0) < 1e-3
    assert packed.usage.prompt_tokens == packed.usage.total_tokens > 0

    floats = client.embeddings.create(model="sim-embed", input="a cat", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, vector)) < 1e-6, "both encodings agree"
    small = client.embeddings.create(model="sim-embed", input="a cat", dimensions=64)
    assert len(small.data[0].embedding) == 64

    ids = [m.id for m in client.models.list()]
    assert ids == ["sluice-sim"], ids
    assert client.models.retrieve("sluice-sim").id == "sluice-sim"


def errors(client: OpenAI) -> None:
    try:
        client.chat.completions.create(model="sim-chat", messages=MESSAGES, extra_headers={"x-sim-fault": "429"})
        raise AssertionError("expected a rate limit error")
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert e.response.headers["retry-after"] == "1"
        assert e.code == "rate_limit_exceeded", e.code
    try:
        client.chat.completions.create(model="sim-chat", messages=MESSAGES, extra_headers={"x-sim-fault": "503"})
        raise AssertionError("expected a server error")
    except openai.InternalServerError as e:
        assert e.status_code == 503
    try:
        client.chat.completions.create(model="sim-chat", messages=[])
        raise AssertionError("expected a bad request")
    except openai.BadRequestError as e:
        assert e.status_code == 400


def main() -> None:
    base_url = sys.argv[1]
    client = OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0, timeout=30)
    chat(client)
    tools_and_json(client)
    embeddings_and_models(client)
    errors(client)
    print(f"openai {openai.__version__}: chat, stream, tools, JSON mode, embeddings, models, errors ok")


if __name__ == "__main__":
    main()
