"""The official OpenAI and Anthropic Python SDKs against Baton's mock provider.

Run by tests/sdk.rs with the base URL of a mock started in-process with
`answer_tokens = 6`. Each check parses the mock's answers with the SDK's
own models (plain and streaming, text and tool calls) and compares what the
SDK understood with what the mock's protocol promises. Exits non-zero with
a message on the first mismatch.
"""

import argparse
import json
import sys
import urllib.request

import anthropic
import openai

ANSWER_TOKENS = 6
PROMPT = "how do refunds work"
TOOL_PROMPT = "please call lookup_order for order 42"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_openai(base_url):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-mock", max_retries=0, timeout=20)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]

    plain = client.chat.completions.create(model="gpt-mock", messages=messages)
    text = plain.choices[0].message.content
    check(plain.object == "chat.completion", f"object: {plain.object}")
    check(plain.id.startswith("chatcmpl-"), f"id: {plain.id}")
    check(plain.choices[0].finish_reason == "stop", f"finish_reason: {plain.choices[0].finish_reason}")
    check(len(text.split()) == ANSWER_TOKENS, f"text: {text!r}")
    check(plain.usage.completion_tokens == ANSWER_TOKENS, f"usage: {plain.usage}")
    check(plain.usage.prompt_tokens == 6, f"usage: {plain.usage}")
    check(plain.usage.total_tokens == plain.usage.prompt_tokens + ANSWER_TOKENS, f"usage: {plain.usage}")

    raw = client.chat.completions.with_raw_response.create(model="gpt-mock", messages=messages)
    check(raw.headers.get("x-request-id", "").startswith("req_"), f"headers: {dict(raw.headers)}")

    streamed, usage, finish = [], None, None
    stream = client.chat.completions.create(
        model="gpt-mock", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                streamed.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("".join(streamed) == text, f"stream text {''.join(streamed)!r} != {text!r}")
    check(finish == "stop", f"stream finish: {finish}")
    check(usage is not None and usage.completion_tokens == ANSWER_TOKENS, f"stream usage: {usage}")

    # The SDK's stream helper accumulates the chunks into a completion.
    with client.chat.completions.stream(model="gpt-mock", messages=messages) as helper:
        final = helper.get_final_completion()
    check(final.choices[0].message.content == text, f"helper: {final.choices[0].message.content!r}")

    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
    tool_messages = [{"role": "user", "content": TOOL_PROMPT}]
    called = client.chat.completions.create(model="gpt-mock", messages=tool_messages, tools=tools)
    call = called.choices[0].message.tool_calls[0]
    check(called.choices[0].finish_reason == "tool_calls", f"tool finish: {called.choices[0].finish_reason}")
    check(call.function.name == "lookup_order", f"tool name: {call.function.name}")
    check(json.loads(call.function.arguments) == {"query": TOOL_PROMPT}, f"arguments: {call.function.arguments}")

    with client.chat.completions.stream(model="gpt-mock", messages=tool_messages, tools=tools) as helper:
        final = helper.get_final_completion()
    streamed_call = final.choices[0].message.tool_calls[0]
    check(streamed_call.id == call.id, f"streamed id {streamed_call.id} != {call.id}")
    check(streamed_call.function.arguments == call.function.arguments, "streamed arguments differ")

    return text


def check_anthropic(base_url, openai_text):
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-mock", max_retries=0, timeout=20)
    messages = [{"role": "user", "content": PROMPT}]

    plain = client.messages.create(model="claude-mock", max_tokens=256, system="be brief", messages=messages)
    check(plain.type == "message" and plain.role == "assistant", f"message: {plain}")
    check(plain.stop_reason == "end_turn", f"stop_reason: {plain.stop_reason}")
    text = plain.content[0].text
    check(text == openai_text, f"the same prompt answers the same over both APIs: {text!r}")
    check(plain.usage.input_tokens == 6 and plain.usage.output_tokens == ANSWER_TOKENS, f"usage: {plain.usage}")

    raw = client.messages.with_raw_response.create(model="claude-mock", max_tokens=256, messages=messages)
    check(raw.headers.get("request-id", "").startswith("req_"), f"headers: {dict(raw.headers)}")

    with client.messages.stream(model="claude-mock", max_tokens=256, system="be brief", messages=messages) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(streamed == text, f"stream text {streamed!r} != {text!r}")
    check(final.stop_reason == "end_turn", f"stream stop_reason: {final.stop_reason}")
    check(final.usage.output_tokens == ANSWER_TOKENS, f"stream usage: {final.usage}")
    check(final.usage.input_tokens == 6, f"stream usage: {final.usage}")

    events = [event.type for event in client.messages.create(
        model="claude-mock", max_tokens=256, messages=messages, stream=True)]
    check(events[0] == "message_start" and events[-1] == "message_stop", f"events: {events}")

    # Continuation: a prefill that starts the answer gets only the rest.
    head = " ".join(text.split()[:2])
    rest = client.messages.create(
        model="claude-mock", max_tokens=256,
        messages=messages + [{"role": "assistant", "content": head}],
    )
    check(head + rest.content[0].text == text, f"continuation: {head!r} + {rest.content[0].text!r}")

    tools = [{"name": "lookup_order", "description": "find an order", "input_schema": {"type": "object"}}]
    tool_messages = [{"role": "user", "content": TOOL_PROMPT}]
    called = client.messages.create(model="claude-mock", max_tokens=256, messages=tool_messages, tools=tools)
    block = called.content[0]
    check(called.stop_reason == "tool_use", f"tool stop_reason: {called.stop_reason}")
    check(block.type == "tool_use" and block.name == "lookup_order", f"block: {block}")
    check(block.input == {"query": TOOL_PROMPT}, f"input: {block.input}")
    with client.messages.stream(model="claude-mock", max_tokens=256, messages=tool_messages, tools=tools) as stream:
        final = stream.get_final_message()
    check(final.content[0].type == "tool_use", f"streamed block: {final.content[0]}")
    check(final.content[0].input == {"query": TOOL_PROMPT}, f"streamed input: {final.content[0].input}")
    check(final.content[0].id == block.id, "streamed tool id differs")



FAILING_SCRIPT = """
[[fault]]
kind = "status"
status = 429
retry_after = "1s"
endpoint = "openai"

[[fault]]
kind = "status"
status = 529
endpoint = "anthropic"
"""


def put_script(base_url, text):
    request = urllib.request.Request(base_url + "/script", data=text.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=20) as response:
        check(response.status == 200, f"PUT /script: {response.status}")


def check_errors(base_url):
    put_script(base_url, FAILING_SCRIPT)
    try:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-mock", max_retries=0, timeout=20)
        try:
            client.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": PROMPT}])
            check(False, "the 429 fault did not raise")
        except openai.RateLimitError as error:
            check(error.status_code == 429, f"status: {error.status_code}")
            check(error.code == "rate_limit_exceeded", f"code: {error.code}")
            check(error.response.headers.get("retry-after") == "1", f"headers: {error.response.headers}")
        client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-mock", max_retries=0, timeout=20)
        try:
            client.messages.create(model="claude-mock", max_tokens=256, messages=[{"role": "user", "content": PROMPT}])
            check(False, "the 529 fault did not raise")
        except anthropic.APIStatusError as error:
            check(error.status_code == 529, f"status: {error.status_code}")
            check(error.body["error"]["type"] == "overloaded_error", f"body: {error.body}")
    finally:
        put_script(base_url, "")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="http://127.0.0.1:PORT of the mock provider")
    args = parser.parse_args()
    try:
        text = check_openai(args.base_url)
        print(f"openai {openai.__version__}: ok")
        check_anthropic(args.base_url, text)
        print(f"anthropic {anthropic.__version__}: ok")
        check_errors(args.base_url)
        print("errors: ok")
    except AssertionError as error:
        print(f"mismatch: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
