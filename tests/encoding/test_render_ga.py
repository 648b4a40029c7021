"""The `ga` dialect against DeepSeek's deepseek-recipe 0.2.0, byte for byte."""


from hypothesis import HealthCheck, given, settings

from dsv4.encoding.render import encode_messages

from .conftest import first_difference
from .conversations import conversations
from .recipe_oracle import recipe_render


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_prompts_byte_identical_to_recipe(req):
    expected = recipe_render(req["messages"], thinking_mode=req["thinking_mode"],
                             reasoning_effort=req["reasoning_effort"])
    ours = encode_messages(**req, dialect="ga")
    assert ours == expected, first_difference(ours, expected)
