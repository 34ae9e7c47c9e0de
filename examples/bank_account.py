"""An event-sourced bank account: python examples/bank_account.py [DIR]

The log in DIR (default ./data/bank-log) is the only database. Each account is a stream of
events (AccountOpened, MoneyDeposited, MoneyWithdrawn, WithdrawalRejected); an account's state
is never stored, it is rebuilt from its stream whenever a command needs it.

What it shows, in order:
1. Commands. A command loads the account (read_stream), decides which events follow, and
   appends them with expected_version = the version it loaded. Opening an account that exists
   is refused by expected_version=NO_STREAM.
2. Optimistic concurrency. Two tellers load the same account and both try to withdraw; the
   second append raises ConflictError, and that teller reloads and decides again.
3. Idempotency. A deposit retried with the same event (the same event id, as after a lost
   reply) is not appended twice.
4. A balance projection over every event, rebuilt twice: by a full replay of the log, and by a
   ProjectionRunner from its newest checkpoint plus the events after it. The two must agree,
   and agree with each account's own stream.

Run it again with the same DIR: the accounts exist, the new commands add to them, and the
projection starts from the checkpoint the first run left.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import consumers  # noqa: F401 (only checks that the package can be imported)
except ImportError:  # a source checkout where consumers/ is not installed: use the one here
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.events import (  # after the path set-up above
    NO_STREAM,
    ConflictError,
    EventStore,
    NewEvent,
    decode_event,
)
from consumers.projection import Projection, ProjectionRunner
from fasterlog import FasterLog

default_directory = Path("data") / "bank-log"
command_attempts_max = 5


class InsufficientFunds(Exception):
    pass


# --- the account: state rebuilt from events, commands decide new events ---------------------


@dataclass
class Account:
    account_id: str
    version: int | None = None  # of the last event loaded: the next append's expected_version
    opened: bool = False
    balance_cents: int = 0

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "AccountOpened":
            self.opened = True
        elif event_type == "MoneyDeposited":
            self.balance_cents += data["amount_cents"]
        elif event_type == "MoneyWithdrawn":
            self.balance_cents -= data["amount_cents"]


def load_account(store: EventStore, account_id: str) -> Account:
    account = Account(account_id)
    for event in store.read_stream(account_id):
        account.apply(event.type, event.data)
        account.version = event.version
    return account


def deposit(amount_cents: int) -> Callable[[Account], list[NewEvent]]:
    def decide(account: Account) -> list[NewEvent]:
        if not account.opened:
            raise ValueError(f"deposit refused: account {account.account_id} is not open")
        return [NewEvent("MoneyDeposited", {"amount_cents": amount_cents})]
    return decide


def withdraw(amount_cents: int) -> Callable[[Account], list[NewEvent]]:
    def decide(account: Account) -> list[NewEvent]:
        if account.balance_cents < amount_cents:
            raise InsufficientFunds(f"{account.account_id} has {money(account.balance_cents)}, "
                                    f"cannot withdraw {money(amount_cents)}")
        return [NewEvent("MoneyWithdrawn", {"amount_cents": amount_cents})]
    return decide


def execute(store: EventStore, account_id: str,
            decide: Callable[[Account], list[NewEvent]]) -> None:
    """Load, decide, append with the loaded version; on a conflict, load again and retry."""
    for attempt in range(1, command_attempts_max + 1):
        account = load_account(store, account_id)
        try:
            events = decide(account)
        except InsufficientFunds as refusal:
            events = [NewEvent("WithdrawalRejected", {"reason": str(refusal)})]
        expected = NO_STREAM if account.version is None else account.version
        try:
            store.append_event(account_id, events, expected_version=expected)
            return
        except ConflictError as conflict:
            print(f"   attempt {attempt}: {conflict}; reloading")
    raise RuntimeError(f"{account_id}: gave up after {command_attempts_max} conflicts")


def money(cents: int) -> str:
    return f"{cents / 100:.2f} EUR"


# --- the balance projection ------------------------------------------------------------------


class BalanceProjection(Projection[dict[str, Any]]):
    """{"balances": {account: cents}, "events": how many account events were folded}."""

    def initial_state(self) -> dict[str, Any]:
        return {"balances": {}, "events": 0}

    def apply(self, state: dict[str, Any], address: int, entry: bytes) -> dict[str, Any]:
        event = decode_event(address, entry)
        if event is None:
            return state
        balances = state["balances"]
        change = {"MoneyDeposited": 1, "MoneyWithdrawn": -1}.get(event.type, 0)
        balances[event.stream_id] = (balances.get(event.stream_id, 0)
                                     + change * event.data.get("amount_cents", 0))
        state["events"] += 1
        return state


def full_replay(log: FasterLog) -> dict[str, Any]:
    projection = BalanceProjection()
    state = projection.initial_state()
    for address, entry in log.scan():
        state = projection.apply(state, address, entry)  # type: ignore[arg-type]
    return state


# --- the story -------------------------------------------------------------------------------


def run_commands(store: EventStore) -> None:
    print("1. commands")
    for account_id, initial_cents in (("alice", 10_000), ("bob", 2_500)):
        try:
            store.append_event(account_id, NewEvent("AccountOpened", {"owner": account_id}),
                               expected_version=NO_STREAM)
            print(f"   opened {account_id}")
        except ConflictError:
            print(f"   {account_id} is already open (expected_version=NO_STREAM refused it)")
        execute(store, account_id, deposit(initial_cents))
    execute(store, "alice", withdraw(3_000))
    execute(store, "bob", withdraw(1_000_000))
    print(f"   alice {money(load_account(store, 'alice').balance_cents)}, "
          f"bob {money(load_account(store, 'bob').balance_cents)}; bob's overdraft was "
          f"recorded as {store.read_stream('bob')[-1].type}")

    print("2. two tellers withdraw from bob at once")
    teller_1, teller_2 = load_account(store, "bob"), load_account(store, "bob")
    assert teller_1.version is not None and teller_2.version is not None
    store.append_event("bob", withdraw(2_000)(teller_1), expected_version=teller_1.version)
    print(f"   teller 1 withdrew {money(2_000)} at version {teller_1.version}")
    try:
        store.append_event("bob", withdraw(2_000)(teller_2), expected_version=teller_2.version)
        raise AssertionError("teller 2 should have hit a conflict")
    except ConflictError as conflict:
        print(f"   teller 2: ConflictError ({conflict}); reloading and deciding again")
    execute(store, "bob", withdraw(2_000))
    last = store.read_stream("bob")[-1]
    print(f"   teller 2's retry recorded {last.type}: {last.data}")

    print("3. a deposit retried after a lost reply")
    retried = NewEvent("MoneyDeposited", {"amount_cents": 500})
    version = store.stream_version("alice")
    assert version is not None
    first = store.append_event("alice", retried, expected_version=version)
    again = store.append_event("alice", retried, expected_version=version)
    assert again.deduplicated and again.addresses == first.addresses
    print(f"   appended once at version {first.last_version}; the retry was deduplicated")


def rebuild_balances(log: FasterLog, store: EventStore) -> None:
    print("4. the balance projection")
    runner = ProjectionRunner(log, BalanceProjection(), "balances", checkpoint_every_entries=50)
    runner.recover()
    start = runner.recovered_from
    replayed = runner.catch_up()
    runner.checkpoint()
    where = "no checkpoint" if start is None else f"checkpoint at {start.position}"
    print(f"   from {where} + {replayed} entries replayed: "
          f"{format_balances(runner.state['balances'])}")
    replay = full_replay(log)
    print(f"   by a full replay of all {replay['events']} events: "
          f"{format_balances(replay['balances'])}")
    assert runner.state == replay, (runner.state, replay)

    restarted = ProjectionRunner(log, BalanceProjection(), "balances")
    restarted.catch_up()
    assert restarted.recovered_from is not None and restarted.state == replay
    for account_id, cents in replay["balances"].items():
        assert load_account(store, account_id).balance_cents == cents
    print(f"   a restarted runner loaded the checkpoint at {restarted.recovered_from.position}: "
          "same balances")
    print("the checkpointed projection, the full replay and every account's stream agree")


def format_balances(balances: dict[str, int]) -> str:
    return ", ".join(f"{account} {money(cents)}" for account, cents in sorted(balances.items()))


def main(arguments: list[str]) -> int:
    directory = Path(arguments[0]) if arguments else default_directory
    exists = (directory / "fasterlog.meta").exists()
    print(f"{'recover the bank log in' if exists else 'create a new bank log in'} {directory}")
    directory.parent.mkdir(parents=True, exist_ok=True)  # FasterLog.open makes only the last part
    with FasterLog.open(directory) as log, EventStore(log) as store:
        run_commands(store)
        rebuild_balances(log, store)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
