"""The registry's messages: each crosses as the JSON body it always had and arrives equal."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from splitrec_core.apart.messages import (
    Abort,
    Holds,
    HoldsVersion,
    Judged,
    Moved,
    NewAliases,
    Registered,
    ScoreWith,
    receive,
    send,
)
from splitrec_core.channel import Kind, LocalHub, PeerError
from splitrec_core.registry import Aliases
from splitrec_core.registry.promotion import Verdict
from splitrec_core.report.metrics import VersionMetrics

VERDICT = Verdict("v2", "v1", True, ["auc up"])
VERDICT_JSON = {"version": "v2", "champion": "v1", "promote": True, "reasons": ["auc up"]}


@pytest.mark.parametrize(("message", "body"), [
    (ScoreWith("v2"), {"version": "v2"}),
    (Judged(VersionMetrics({"income": {"auc": 0.9}}, {"epochs_run": 3}, {}), VERDICT),
     {"metrics": {"tasks": {"income": {"auc": 0.9}}, "training": {"epochs_run": 3},
                  "leakage": {}}, "verdict": VERDICT_JSON}),
    (Registered("v2"), {"registered": "v2"}),
    (HoldsVersion("v2"), {"holds": "v2"}),
    (Holds(False), {"holds": False}),
    (Abort("bank lacks version v2"), {"abort": "bank lacks version v2"}),
    (NewAliases(Aliases("v2", None, ["v1"])),
     {"aliases": {"current": "v2", "candidate": None, "previous": ["v1"]}}),
    (Moved(), {"moved": True}),
])
def test_a_message_crosses_as_its_json_body_and_arrives_equal(message, body):
    # Prepare
    hub = LocalHub(record=True)

    # Execute
    send(hub.channel("label"), "bank", message)
    arrived = receive(hub.channel("bank"), "label", type(message))

    # Assert: the same JSON as the dicts sent before the messages were typed (same bytes)
    [(kind, _, _, payload)] = hub.recorded
    assert kind == Kind.REGISTRY
    assert pa.ipc.open_stream(payload).read_all().to_pylist() == [{"json": json.dumps(body)}]
    assert arrived == message


def test_a_feature_party_tells_an_abort_from_new_aliases_and_refuses_anything_else():
    # Prepare
    hub = LocalHub()
    label, bank = hub.channel("label"), hub.channel("bank")
    for message in (Abort("media lacks version v3"), NewAliases(Aliases("v3")), Moved()):
        send(label, "bank", message)

    # Execute
    first, second = (receive(bank, "label", NewAliases, Abort) for _ in range(2))

    # Assert
    assert (first, second) == (Abort("media lacks version v3"), NewAliases(Aliases("v3")))
    with pytest.raises(PeerError,
                       match=r"label sent \['moved'\] where NewAliases or Abort was due"):
        receive(bank, "label", NewAliases, Abort)
