"""Long runs stay inside the context: old tool outputs (then old reasoning) are replaced by stubs when the
conversation nears the limit, recent steps are kept whole, the elided texts stay in the trajectory, and a context
overflow reported by the endpoint is met by compacting and retrying once."""

from dsv4.agent import Agent, AgentConfig, Completion, ContextExhausted, Message, Tool, ToolRegistry
from dsv4.agent.context import chars, estimate_tokens

from .conftest import call

BIG = Tool("dump", "prints a lot", {"type": "object", "properties": {"n": {"type": "integer"}}},
           lambda n: f"line {n}\n" + "x" * 4000)


class CountingClient:
    """Calls `dump` `calls` times, then answers; counts 4 characters a token; refuses prompts over `limit`."""

    model = "counting"

    def __init__(self, calls: int, limit: int | None = None):
        self.calls, self.limit, self.prompts = calls, limit, []

    def complete(self, messages, tools):
        tokens = chars(messages) // 4
        if self.limit is not None and tokens > self.limit:
            raise ContextExhausted(f"this model's maximum context length is {self.limit} tokens; the messages "
                                   f"take {tokens}", 400)
        self.prompts.append((tokens, [m.model_copy() for m in messages]))
        i = len(self.prompts)
        calls = [call(f"c{i}", "dump", n=i)] if i <= self.calls else None
        message = Message(role="assistant", content="" if calls else "done", reasoning_content=f"step {i} " * 50,
                          tool_calls=calls)
        return Completion(message, "tool_calls" if calls else "stop", {"prompt_tokens": tokens,
                                                                       "completion_tokens": 10})


def test_old_tool_outputs_are_elided_near_the_limit():
    client = CountingClient(calls=8)
    agent = Agent(client, ToolRegistry([BIG]), AgentConfig(context_tokens=4000, keep_recent=2))
    t = agent.run("dump a lot")
    assert t.status == "finished" and len(t.steps) == 9
    assert max(tokens for tokens, _ in client.prompts) < 4000 * 0.85 + 1100  # one step past the threshold at most
    last = client.prompts[-1][1]
    outputs = [m.content for m in last if m.role == "tool"]
    assert outputs[-1].startswith("line 8") and outputs[-2].startswith("line 7")  # the recent steps, whole
    assert outputs[0].startswith("[elided to save context: 4007 characters; it began: 'line 1'")
    assert t.elided and all(t.messages[e.message].content != e.text for e in t.elided if e.field == "content")
    assert {e.text.splitlines()[0] for e in t.elided if e.field == "content"} >= {"line 1", "line 2"}
    estimate = estimate_tokens(t)
    assert estimate is not None and abs(estimate - chars(t.messages) // 4) <= 2


def test_an_overflow_the_endpoint_reports_is_compacted_and_retried():
    client = CountingClient(calls=6, limit=3000)
    t = Agent(client, ToolRegistry([BIG]), AgentConfig(keep_recent=1)).run("dump a lot")  # context unknown
    assert t.status == "finished" and t.elided and all(tokens <= 3000 for tokens, _ in client.prompts)


def test_without_anything_left_to_elide_the_run_ends_as_context_exhausted():
    client = CountingClient(calls=3, limit=1500)
    t = Agent(client, ToolRegistry([BIG]), AgentConfig(keep_recent=5)).run("dump a lot")
    assert t.status == "context_exhausted" and "maximum context length is 1500" in t.error
