"""Chat tasks: datasets (real and synthetic), their rendering into conversations, and their scoring."""
