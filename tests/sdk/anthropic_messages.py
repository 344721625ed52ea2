"""The official anthropic SDK against `loadtest mock` (argument: the base
URL, e.g. http://127.0.0.1:8080). Prints `sdk ok` when every check holds."""
import sys

import anthropic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="mock", max_retries=0)
messages = [{"role": "user", "content": "hello"}]

cut = client.messages.create(model="mock-model", messages=messages, max_tokens=6)
assert cut.stop_reason == "max_tokens", cut.stop_reason
assert cut.usage.output_tokens == 6, cut.usage
done = client.messages.create(model="mock-model", messages=messages, max_tokens=50,
                              extra_headers={"x-mock-tokens": "3"})
assert done.stop_reason == "end_turn", done.stop_reason
assert len(done.content[0].text.split()) == 3, done.content

with client.messages.stream(model="mock-model", messages=messages, max_tokens=5) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert len(text.split()) == 5, text
assert final.stop_reason == "max_tokens", final.stop_reason
assert final.usage.output_tokens == 5, final.usage

counted = client.messages.count_tokens(model="mock-model", messages=messages)
assert counted.input_tokens >= 1, counted

models = client.models.list()
assert [m.id for m in models.data] == ["mock-model"], models

# Errors in Anthropic's shape are raised as the SDK's own classes.
for header, error in [("status_429", anthropic.RateLimitError),
                      ("status_500", anthropic.InternalServerError)]:
    try:
        client.messages.create(model="mock-model", messages=messages, max_tokens=5,
                               extra_headers={"x-mock-fault": header})
        raise AssertionError(f"{header} was not raised")
    except error as e:
        assert e.body["type"] == "error", e.body
        assert e.body["error"]["type"] in ("rate_limit_error", "api_error"), e.body
try:
    client.messages.create(model="mock-model", messages=[], max_tokens=5,
                           extra_headers={"x-mock-status": "400"})
    raise AssertionError("a 400 was not raised")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body

print("sdk ok")
