"""Whether a language instruction may drive a policy (ROS-free, so the node, the bag replay and
the evaluation judge instructions the same way).

An instruction that says nothing must not be taken as "carry on": a robot that keeps driving on
the previous instruction after an operator sent an empty one is doing what nobody asked for. So
an instruction made only of whitespace, line/paragraph separators, control or format characters
(Unicode categories Zs, Zl, Zp, Cc, Cf: "\\u200b", "\\ufeff", "\\u3000", ...) counts as empty,
the same as "". NUL is refused outright: C-string layers (rclpy's string conversion among them)
cut a string at NUL, so "stop\\x00 go forward" would reach one consumer as "stop" and another in
full.
"""

from __future__ import annotations

import unicodedata

MAX_INSTRUCTION_CHARS = 512
EMPTY_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
"""Unicode categories that carry no words: an instruction made only of these is empty."""
ALLOWED_CONTROLS = frozenset("\t\n\r")


def is_blank(text: str) -> bool:
    """True when `text` has no character outside the EMPTY_CATEGORIES (so "" is blank too)."""
    return all(unicodedata.category(c) in EMPTY_CATEGORIES for c in text)


def check_instruction(text: str) -> str | None:
    """Why an instruction is unusable, or None if it may drive the policy."""
    if "\x00" in text:
        return "instruction contains NUL"
    if is_blank(text):
        return "empty instruction"
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f"instruction longer than {MAX_INSTRUCTION_CHARS} characters ({len(text)})"
    if "\ufffd" in text or any(
        unicodedata.category(c) in ("Cc", "Cs") and c not in ALLOWED_CONTROLS for c in text
    ):
        return "instruction contains control or undecodable characters"
    return None
