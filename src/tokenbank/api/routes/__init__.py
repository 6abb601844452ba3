"""One router per dialect or audience."""
