"""Who may open an OCPP connection before its password is checked: the exposure rules and the caps on
handshakes per address and on open connections."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ocpp.admission import ConnectionGate, LoginPolicy

EXPOSED = LoginPolicy(exposed=True, insecure=frozenset({"CP02"}), configured=frozenset({"CP01", "CP02"}))


def test_on_an_exposed_endpoint_a_charger_without_a_password_is_refused_unless_stated_insecure() -> None:
    assert EXPOSED.no_password_refused("CP01")
    assert not EXPOSED.no_password_refused("CP02")
    assert EXPOSED.no_password_refused("CP99")  # not configured, unknown ids not allowed
    allow_unknown = LoginPolicy(exposed=True, unknown_insecure=True, configured=frozenset({"CP01"}))
    assert allow_unknown.no_password_refused("CP01") and not allow_unknown.no_password_refused("CP99")
    on_loopback = LoginPolicy(exposed=False, configured=frozenset({"CP01"}))
    assert not on_loopback.no_password_refused("CP01") and not on_loopback.no_password_refused("CP99")


@given(st.text(min_size=1, max_size=64), st.booleans(), st.sampled_from(["CP01", "CP02"]))
def test_a_correct_password_is_refused_exactly_when_short_on_an_exposed_endpoint_and_not_insecure(
    password: str, exposed: bool, charger_id: str
) -> None:
    policy = LoginPolicy(exposed=exposed, insecure=frozenset({"CP02"}), configured=frozenset({"CP01", "CP02"}))
    expected = exposed and charger_id == "CP01" and len(password) < 16
    assert policy.short_password_refused(charger_id, password) is expected


def test_the_gate_caps_handshakes_per_host_and_connections_in_all() -> None:
    gate = ConnectionGate(max_handshakes_per_host=2, max_connections=3)
    assert [gate.admit("10.0.0.1") for _ in range(3)] == ["ok", "ok", "host"]
    assert gate.admit("10.0.0.2") == "ok"
    assert gate.admit("10.0.0.3") == "total"
    gate.handshake_done("10.0.0.1")  # an OCPP connection now: it still counts in all
    assert gate.admit("10.0.0.1") == "total"
    gate.closed("10.0.0.2", handshaking=True)
    assert gate.admit("10.0.0.1") == "ok"
    assert gate.handshaking == {"10.0.0.1": 2} and gate.open_count == 3


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["admit", "done", "close"]), st.integers(0, 3), st.integers(0, 50)), max_size=80))
def test_the_gates_counts_match_the_connections_it_holds(steps: list[tuple[str, int, int]]) -> None:
    gate = ConnectionGate(max_handshakes_per_host=3, max_connections=5)
    held: list[tuple[str, bool]] = []  # (host, still handshaking) of each admitted connection
    for action, host_n, pick in steps:
        host = f"10.0.0.{host_n}"
        if action == "admit":
            verdict = gate.admit(host)
            if verdict == "ok":
                held.append((host, True))
            else:
                assert len(held) >= 5 or sum(1 for h, s in held if h == host and s) >= 3
        elif held:
            index = pick % len(held)
            h, handshaking = held[index]
            if action == "done" and handshaking:
                gate.handshake_done(h)
                held[index] = (h, False)
            elif action == "close":
                gate.closed(h, handshaking=handshaking)
                del held[index]
        assert gate.open_count == len(held) <= 5
        expected: dict[str, int] = {}
        for h, handshaking in held:
            if handshaking:
                expected[h] = expected.get(h, 0) + 1
        assert gate.handshaking == expected and all(n <= 3 for n in expected.values())
