"""How long one `like` filter takes on a 10 kB value, for the worst patterns we know.

    python -m bench.filters [--size 10000] [--repeat 20]

Prints a markdown table: pattern, value, best and median time per match. Every row should stay
under 1 ms: the notifier runs filters on its event loop, between every client's frames.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rowcast.notifier.filters import Filter

# Each ends in "!%": the head and tail always match, so every segment between is searched.
WORST = [
    ("%a%a%a%a%a%a!%", "backtracking regex: seconds at 90 characters"),
    ("%_" * 10 + "!%", "ten `%_`: 18.8 s on 40 characters"),
    ("%" + "_" * 60 + "!%", "a long run of `_`"),
    ("%" + "a_" * 30 + "!%", "text and `_` between `%`: bit masks"),
    (
        "%" + "".join(chr(98 + i) + "_" for i in range(25)) + "A_B_C_D_E_a!%",
        "31 distinct characters in masks",
    ),
    ("%a" * 31 + "!%", "31 `%` segments"),
    ("%" + "a" * 61 + "!%", "a long literal (str.find)"),
]
VALUES = [("a", "ASCII"), ("é", "Latin-1"), ("€", "beyond Latin-1")]


def near_miss(pattern: str, size: int) -> str:
    """The pattern's own text (each `_` as x) less its middle character, over and over: every
    piece of every segment occurs, again and again, but never all in place."""
    text = pattern.replace("%", "").replace("_", "x")
    text = (text[: len(text) // 2] + text[len(text) // 2 + 1 :]) or "x"
    return (text * (size // len(text) + 1))[:size]


def measure(pattern: str, value: str, repeat: int) -> list[float]:
    flt = Filter.compile({"title": {"like": pattern}}, {"title": "S"})
    row = {"title": value}
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        flt.matches(row)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=10_000, help="characters in the value (default 10000)")
    parser.add_argument("--repeat", type=int, default=20, help="matches per row (default 20)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 characters, 2 matches")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeat = 1_000, 2
    print(f"| pattern | why it is here | value ({args.size} characters) | best ms | median ms | < 1 ms |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for template, why in WORST:
        cases = [(template.replace("a", fill), fill * args.size, kind) for fill, kind in VALUES]
        cases += [
            (template, near_miss(template, args.size), "near misses, ASCII"),
            (template.replace("a", "€"), near_miss(template.replace("a", "€"), args.size), "near misses, €"),
        ]
        for pattern, value, kind in cases:
            times = measure(pattern, value, args.repeat)
            median = statistics.median(times)
            worst = max(worst, median)
            shown = pattern if len(pattern) <= 32 else pattern[:29] + "..."
            print(
                f"| `{shown}` | {why} | {kind} | {min(times) * 1000:.3f} | {median * 1000:.3f} |"
                f" {'yes' if median < 0.001 else 'no'} |"
            )
    print(f"\nslowest median: {worst * 1000:.3f} ms")


if __name__ == "__main__":
    main()
