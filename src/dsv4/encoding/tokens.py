"""DeepSeek-V4 special tokens and DSML markers, spelled exactly as the tokenizer has them.

All bars are U+FF5C FULLWIDTH VERTICAL LINE and `▁` is U+2581; DSML tags are plain text built from `｜DSML｜`.
"""

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
LATEST_REMINDER = "<｜latest_reminder｜>"
DSML = "｜DSML｜"

# Quick-instruction task tokens (`message["task"]`).
TASK_TOKENS = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}

TOOL_CALLS_OPEN = f"<{DSML}tool_calls>"
TOOL_CALLS_CLOSE = f"</{DSML}tool_calls>"
INVOKE_OPEN = f"<{DSML}invoke"  # followed by ` name="...">`
INVOKE_CLOSE = f"</{DSML}invoke>"
PARAM_OPEN = f"<{DSML}parameter"  # followed by ` name="..." string="true|false">`
PARAM_CLOSE = f"</{DSML}parameter>"

# The separator the reference requires between content and the tool-call block.
TOOL_CALLS_LEAD = "\n\n" + TOOL_CALLS_OPEN

TOOL_RESULT_OPEN = "<tool_result>"
TOOL_RESULT_CLOSE = "</tool_result>"
