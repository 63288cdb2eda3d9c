"""Frost inside other tools: `frost.integrations.trl` adds Frost's proposal and strict replacement to TRL's
GRPOTrainer (optional extra `frost-training[trl]`)."""
