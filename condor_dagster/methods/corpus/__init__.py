"""The corpus stage AugCon and Kun share: documents read from a folder, one partition per shard."""
