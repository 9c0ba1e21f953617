"""The official `openai` SDK on an endpoint that redacts PII and restores it (sluice-sim behind it
echoes each prompt): the SDK must read the restored answer, whole and streamed, exactly as sent.

Usage: python gateway_redaction.py BASE_URL KEY PROMPT
Exits non-zero, with the failed assertion, if an answer is not the prompt or a chunk does not parse.
"""

import sys

from openai import OpenAI

base_url, key, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
messages = [{"role": "user", "content": prompt}]

whole = client.chat.completions.create(model="m", messages=messages, max_tokens=400)
assert whole.choices[0].message.content == prompt, whole.choices[0].message.content

pieces = []
for chunk in client.chat.completions.create(model="m", messages=messages, max_tokens=400, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
assert "".join(pieces) == prompt, pieces
assert not any("[" in piece for piece in pieces), pieces
print("ok:", len(pieces), "streamed pieces")
