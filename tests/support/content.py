"""What the example content is known to hold, for the tests that compose and render it."""

from pathlib import Path

# The eight newest example summaries dated on or before 2026-12-01, in compose's order.
NEWEST_EIGHT = [
    "pregnancy-breastfeeding-therapy",  # 2026-11-19
    "gut-bacteria-disease-activity",  # 2026-11-12 (same day as the next: ties by id)
    "trem2-microglia-repair",  # 2026-11-12
    "oct-optic-neuritis",
    "cognition-processing-speed",
    "risk-variants-brain-methylation",
    "cancer-immunotherapy-autoimmunity",
    "vaccine-response-anti-cd20",
]

# The text part of the example issue for a reader of all topics.
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "2026-12-all-topics.txt"
