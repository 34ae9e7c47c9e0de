"""Tests of the RESP server, fasterlog_server: the sans-IO codec (test_resp), the server
against redis-py and raw sockets (test_service, _connection, _groups, _kv), redis-cli and
redis-benchmark against a server process (test_service_tools) and the C lane of a lone XADD
(test_service_xadd_lane)."""
