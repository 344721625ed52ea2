"""The official openai SDK's Chat Completions and models calls against
`loadtest mock` (argument: the base URL, e.g. http://127.0.0.1:8080/v1).
Prints `sdk ok` when every check holds."""
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="mock", max_retries=0)
messages = [{"role": "user", "content": "hello"}]

# A reply cut at max_tokens (the mock's default: it never stops early)
# says so, as the API does.
cut = client.chat.completions.create(model="mock-model", messages=messages, max_tokens=6)
assert cut.choices[0].finish_reason == "length", cut.choices[0].finish_reason
assert cut.usage.completion_tokens == 6, cut.usage
# One that stops under the cap is a plain stop.
done = client.chat.completions.create(model="mock-model", messages=messages, max_tokens=50,
                                      extra_headers={"x-mock-tokens": "3"})
assert done.choices[0].finish_reason == "stop", done.choices[0].finish_reason

stream = client.chat.completions.create(model="mock-model", messages=messages, max_tokens=4,
                                        stream=True, stream_options={"include_usage": True})
chunks = list(stream)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finish == ["length"], finish
assert len(text.split()) == 4, text
assert chunks[-1].usage.completion_tokens == 4, chunks[-1].usage

models = client.models.list()
assert [m.id for m in models.data] == ["mock-model"], models

try:
    client.chat.completions.create(model="mock-model", messages=messages,
                                   extra_headers={"x-mock-fault": "status_429"})
    raise AssertionError("a 429 was not raised")
except openai.RateLimitError as e:
    assert e.status_code == 429

print("sdk ok")
