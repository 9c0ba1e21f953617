"""The official `anthropic` SDK, used as users use it, against sluice-sim.

Usage: python sim_anthropic.py BASE_URL   (e.g. http://127.0.0.1:8000)
Exits non-zero, with the failed assertion, if the SDK cannot read a response or reads
something unexpected.
"""

import sys

import anthropic
from anthropic import Anthropic

MESSAGES = [{"role": "user", "content": "Name a mountain."}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def messages(client: Anthropic) -> None:
    plain = client.messages.create(model="sim-claude", max_tokens=12, system="Be brief.", messages=MESSAGES)
    assert plain.type == "message" and plain.role == "assistant", plain
    assert plain.model == "sim-claude"
    assert plain.stop_reason == "max_tokens", plain.stop_reason
    assert plain.content[0].type == "text" and plain.content[0].text, plain.content
    assert plain.usage.output_tokens == 12 and plain.usage.input_tokens > 0, plain.usage

    with client.messages.stream(model="sim-claude", max_tokens=12, system="Be brief.", messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 12, pieces  # one token an event
    assert "".join(pieces) == plain.content[0].text, (pieces, plain.content[0].text)
    assert final.content[0].text == plain.content[0].text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 12

    # Low-level events, as a gateway or a custom client reads them.
    kinds = [event.type for event in client.messages.create(
        model="sim-claude", max_tokens=3, messages=MESSAGES, stream=True)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert kinds.count("content_block_delta") == 3, kinds

    natural = client.messages.create(model="sim-claude", max_tokens=1000, messages=MESSAGES)
    assert natural.stop_reason == "end_turn", natural.stop_reason


def tool_use(client: Anthropic) -> None:
    ask = [{"role": "user", "content": "Weather in Lyon?"}]
    used = client.messages.create(model="sim-claude", max_tokens=200, messages=ask, tools=TOOLS)
    assert used.stop_reason == "tool_use", used
    block = used.content[0]
    assert block.type == "tool_use" and block.name == "get_weather", block
    assert isinstance(block.input["city"], str), block.input

    with client.messages.stream(model="sim-claude", max_tokens=200, messages=ask, tools=TOOLS) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == block.input, final.content

    answered = client.messages.create(
        model="sim-claude",
        max_tokens=20,
        tools=TOOLS,
        messages=ask
        + [
            {"role": "assistant", "content": [block.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18C"}]},
        ],
    )
    assert answered.content[0].type == "text", answered.content


def errors(client: Anthropic) -> None:
    try:
        client.messages.create(model="sim-claude", max_tokens=5, messages=MESSAGES,
                               extra_headers={"x-sim-fault": "429"})
        raise AssertionError("expected a rate limit error")
    except anthropic.RateLimitError as e:
        assert e.status_code == 429
        assert e.body["error"]["type"] == "rate_limit_error", e.body
    try:
        client.messages.create(model="sim-claude", max_tokens=5, messages=MESSAGES,
                               extra_headers={"x-sim-fault": "529"})
        raise AssertionError("expected an overloaded error")
    except anthropic.APIStatusError as e:
        assert e.status_code == 529
        assert e.body["error"]["type"] == "overloaded_error", e.body


def main() -> None:
    base_url = sys.argv[1]
    client = Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0, timeout=30)
    messages(client)
    tool_use(client)
    errors(client)
    print(f"anthropic {anthropic.__version__}: messages, stream, tool use, errors ok")


if __name__ == "__main__":
    main()
