"""nanochat: a minimal, full-stack ChatGPT clone you can train and read end to end."""
