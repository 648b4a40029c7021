"""Shared oracles and generators for the encoding tests."""


def first_difference(ours: str, expected: str) -> str:
    """A short report of where two prompts part, for readable failures on long prompts."""
    i = next((k for k, (a, b) in enumerate(zip(ours, expected, strict=False)) if a != b), min(len(ours), len(expected)))
    return f"at char {i}:\n  ours:     {ours[max(0, i - 80):i + 80]!r}\n  expected: {expected[max(0, i - 80):i + 80]!r}"
