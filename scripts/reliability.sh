#!/usr/bin/env bash
# The reliability suite in long mode (pytest --long); writes RELIABILITY.md from the figures
# its tests record. CI runs the same tests in short mode through scripts/test.sh.
#
#   bash scripts/reliability.sh            long mode (hours: 10,000 kills, 10^8 fuzz inputs)
#   bash scripts/reliability.sh --short    the CI counts, a few minutes
#   FASTERLOG_KILL_CHAINS=20 FASTERLOG_FUZZ_SECONDS=600 FASTERLOG_MUTATION_INPUTS=10000000 \
#       bash scripts/reliability.sh
#                                          long mode with fewer kills and a shorter fuzz run
# Extra arguments go to pytest. Exit status: non-zero when a test failed (RELIABILITY.md is
# still written, so the failing figure is visible).
set -euo pipefail
cd "$(dirname "$0")/.."
command="bash scripts/reliability.sh $*"
mode=(--long)
if [[ "${1:-}" == "--short" ]]; then
    shift
    mode=()
fi
results="$(mktemp -d)"
export FASTERLOG_RESULTS_DIR="$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
tests=(
    tests/reliability/test_reliability_power_loss.py
    tests/reliability/test_reliability_io_errors.py
    tests/reliability/test_reliability_commit_sync.py
    "tests/reliability/test_corruption.py::test_a_failed_fsync_is_called_once_never_retried_and_fences_the_log"
    "tests/reliability/test_corruption.py::test_every_single_bit_flip_in_a_committed_64_kib_region_raises_corruption_error"
    "tests/reliability/test_corruption.py::test_random_multi_byte_corruptions_in_a_committed_region_are_all_detected"
    "tests/reliability/test_crash.py::test_kill_at_named_crash_point_keeps_every_acknowledged_entry"
    "tests/reliability/test_crash.py::test_kill_9_mid_stream_keeps_every_acknowledged_entry_and_adds_nothing"
    "tests/reliability/test_corruption.py::test_torn_tail_is_cut_back_to_the_last_complete_commit"
    "tests/reliability/test_corruption.py::test_corrupted_frame_in_the_middle_is_reported_with_its_address_and_never_cut"
    "tests/reliability/test_damage.py::test_segment_cut_at_any_offset_is_reported_never_cut_silently"
    "tests/reliability/test_damage.py::test_online_backups_of_a_live_log_always_open_with_the_committed_prefix"
    "tests/fasterlog_server/test_service.py::test_limits_and_auth_attacked_with_raw_sockets_figure"
    tests/reliability/test_reliability_fuzz.py
    tests/reliability/test_reliability_races.py
    tests/fasterlog/test_readonly_live.py
    tests/reliability/test_truncation_pause.py
    "tests/fasterlog_server/test_service_xadd_lane.py::test_mutated_frames_are_taken_only_when_the_reference_reader_reads_that_xadd"
    tests/reliability/test_reliability_full_disk.py
    tests/reliability/test_reliability_memory.py
    tests/reliability/test_reliability_memory_streams.py
    tests/reliability/test_reliability_held.py
    "tests/fasterlog_server/test_service_offloop.py::test_ping_p99_stays_under_100_ms_while_kv_checkpoint_and_log_truncate_run"
    "tests/fasterlog/test_repair.py::test_random_logs_repaired_recover_the_committed_prefix_exactly"
    "tests/fasterlog_server/test_service_loop.py::test_scan_over_many_keys_keeps_ping_p99_under_100_ms"
)
status=0
python3 -m pytest -q -s "${mode[@]}" "${tests[@]}" "$@" || status=$?
if [[ -s "$results/results.jsonl" ]]; then
    python3 -m tests.reliability.report RELIABILITY.md "$results/results.jsonl" \
        --command "${command% }"
    echo "RELIABILITY.md written from $results/results.jsonl"
fi
exit $status
