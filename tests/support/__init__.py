"""What the test suite shares: settings, a server in a thread, fault helpers, child processes,
the CLI runner, the long-mode switch and the reliability figures.

Rules: test modules import helpers from here and from nowhere else (never from another test
module or a conftest); fixtures come from the conftest files. Modules here import the product
packages and the standard library, and pytest or hypothesis only where they must (mode.py), so
a child process can import them without loading pytest. The scripts in children/ run as child
processes (`python -m tests.support.children.NAME`, or by path); kv_kill.py is both the KV
kill harness and its child.
"""
