"""Tests of the KV layer, kvlayer: the store (test_kvstore), its C hot paths (test_kv_fast),
checkpoints (test_kv_checkpoint), compaction (test_kv_compaction), followers in another
process (test_kv_follower) and the C hash index it is built on (test_index). The kill -9
harness they share is tests/support/kv_kill.py."""
