"""The official openai SDK against `loadtest mock` (argument: the base URL,
e.g. http://127.0.0.1:8080/v1). Prints `sdk ok` when every check holds."""
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="mock", max_retries=0)

# The model stops on its own after 5 tokens, under the cap: completed.
first = client.responses.create(model="mock-model", input="hello", instructions="be brief",
                                max_output_tokens=8, extra_headers={"x-mock-tokens": "5"})
assert first.status == "completed", first.status
assert first.usage.output_tokens == 5, first.usage
assert len(first.output_text.split()) == 5, first.output_text

# The server keeps the history: the next turn names the previous response.
second = client.responses.create(model="mock-model", input="and more", previous_response_id=first.id,
                                 max_output_tokens=3)
assert second.usage.output_tokens == 3, second.usage

# Cut at max_output_tokens: incomplete, with the reason.
cut = client.responses.create(model="mock-model", input="long", max_output_tokens=2,
                              extra_headers={"x-mock-tokens": "50"})
assert cut.status == "incomplete", cut.status
assert cut.incomplete_details.reason == "max_output_tokens", cut.incomplete_details

try:
    client.responses.create(model="mock-model", input="x", previous_response_id="resp_mock_0_999999999")
    raise AssertionError("an unknown previous_response_id was accepted")
except openai.NotFoundError:
    pass

with client.responses.stream(model="mock-model", input="stream it", max_output_tokens=9,
                             extra_headers={"x-mock-tokens": "4"}) as stream:
    deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
    final = stream.get_final_response()
assert len(deltas) == 4, deltas
assert final.output_text == "".join(deltas), (final.output_text, deltas)
assert final.usage.output_tokens == 4, final.usage

print("sdk ok")
