"""The command families, one module per family of Redis commands: connection (PING, AUTH,
HELLO...), keys (DEL, EXISTS, TYPE, TTL, SCAN, DBSIZE), strings, transactions (MULTI, EXEC,
WATCH...), streams, groups (XGROUP, XREADGROUP, XACK...) and admin (INFO, CONFIG, COMMAND,
WAITAOF, KV.CHECKPOINT, LOG.*). Each module holds handlers and their helpers (context.py
rule 2), and base.py what they share; the table that names the commands and gives their
arities and flags is dispatch.COMMANDS, the only place that does.
"""
