"""The official OpenAI and Anthropic Python SDKs against `baton serve`.

Run by tests/gateway.rs with the gateway's base URL. The gateway fronts a
route `main` whose primary cuts every stream after a few tokens and whose
secondary answers; `--expected` is the whole answer the mocks give to
PROMPT, so a stream that failed over mid-answer must still read as exactly
that. The SDKs are unmodified: only `base_url` points at Baton.
"""

import argparse
import json
import sys

import anthropic
import openai

PROMPT = "my label will not print"
TOOL_PROMPT = "please call lookup_order for order 42"
TOOLS_OPENAI = [{
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}]
TOOLS_ANTHROPIC = [{
    "name": "lookup_order",
    "description": "Find an order",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}]


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_openai(base_url, expected):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": PROMPT}]

    plain = client.chat.completions.with_raw_response.create(model="main", messages=messages)
    completion = plain.parse()
    check(completion.choices[0].message.content == expected, f"plain text: {completion.choices[0].message.content!r}")
    check(completion.choices[0].finish_reason == "stop", f"finish: {completion.choices[0].finish_reason}")
    check(plain.headers.get("x-baton-trace-id"), "no trace id header")
    check(completion.usage.completion_tokens > 0, f"usage: {completion.usage}")

    text, usage, finish = "", None, None
    stream = client.chat.completions.create(
        model="main", messages=messages, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(text == expected, f"streamed text after a mid-stream failover: {text!r}")
    check(finish == "stop", f"stream finish: {finish}")
    check(usage is not None and usage.completion_tokens > 0, f"stream usage: {usage}")

    tools = client.chat.completions.create(
        model="main", messages=[{"role": "user", "content": TOOL_PROMPT}], tools=TOOLS_OPENAI)
    call = tools.choices[0].message.tool_calls[0]
    check(tools.choices[0].finish_reason == "tool_calls", f"tool finish: {tools.choices[0].finish_reason}")
    check(call.function.name == "lookup_order", f"tool name: {call.function.name}")
    check(json.loads(call.function.arguments) == {"query": TOOL_PROMPT}, f"tool arguments: {call.function.arguments}")

    streamed_args, name = "", None
    for chunk in client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": TOOL_PROMPT}], tools=TOOLS_OPENAI, stream=True):
        for choice in chunk.choices:
            for part in choice.delta.tool_calls or []:
                name = part.function.name or name
                streamed_args += part.function.arguments or ""
    check(name == "lookup_order" and json.loads(streamed_args) == {"query": TOOL_PROMPT},
          f"streamed tool call: {name} {streamed_args!r}")

    try:
        client.chat.completions.create(model="no-such-route", messages=messages)
        raise AssertionError("an unknown model was answered")
    except openai.NotFoundError as error:
        check(error.status_code == 404, f"status: {error.status_code}")
        check(error.body.get("code") == "model_not_found", f"error body: {error.body}")
    print("openai: plain, stream with failover, tools, errors: ok")


def check_anthropic(base_url, expected):
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": PROMPT}]

    message = client.messages.create(model="main", max_tokens=200, messages=messages)
    check(message.content[0].text == expected, f"plain text: {message.content[0].text!r}")
    check(message.stop_reason == "end_turn", f"stop: {message.stop_reason}")

    with client.messages.stream(model="main", max_tokens=200, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(text == expected, f"streamed text after a mid-stream failover: {text!r}")
    check(final.stop_reason == "end_turn", f"stream stop: {final.stop_reason}")

    tools = client.messages.create(
        model="main", max_tokens=200, tools=TOOLS_ANTHROPIC,
        messages=[{"role": "user", "content": TOOL_PROMPT}])
    use = [block for block in tools.content if block.type == "tool_use"]
    check(tools.stop_reason == "tool_use", f"tool stop: {tools.stop_reason}")
    check(use and use[0].name == "lookup_order" and use[0].input == {"query": TOOL_PROMPT}, f"tool use: {tools.content}")

    with client.messages.stream(model="main", max_tokens=200, tools=TOOLS_ANTHROPIC,
                                messages=[{"role": "user", "content": TOOL_PROMPT}]) as stream:
        final = stream.get_final_message()
    use = [block for block in final.content if block.type == "tool_use"]
    check(use and use[0].input == {"query": TOOL_PROMPT}, f"streamed tool use: {final.content}")

    try:
        client.messages.create(model="no-such-route", max_tokens=10, messages=messages)
        raise AssertionError("an unknown model was answered")
    except anthropic.NotFoundError as error:
        check(error.status_code == 404, f"status: {error.status_code}")
    print("anthropic: plain, stream with failover, tools, errors: ok")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--expected", required=True)
    args = parser.parse_args()
    try:
        check_openai(args.base_url, args.expected)
        check_anthropic(args.base_url, args.expected)
    except AssertionError as error:
        print(f"mismatch: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
