r"""Parties apart: Arrow Flight with mutual TLS and a bearer token per party.

Every party runs one `FlightEndpoint` (a Flight server at its address). For each stage of a run
the parties open a `FlightChannel`: of every pair that talks, the party later in the order dials
the earlier one (so the label party, first, dials nobody; with parties apart only it and each
feature party talk) and both directions share that one long-lived `DoExchange` stream. A message
is the same framed Arrow IPC stream the process pipes carry, sent as one Flight message's app
metadata (`kind\n<IPC bytes>`): one stream carries tables of any schema, and the counts per kind
equal the other channels'.

Who may connect: a peer whose certificate the federation's CA signed (mutual TLS) and whose
bearer token hashes to the SHA-256 the federation file lists for it, with the same federation
file (its hash), into a session the party expects it in (`server`). Plaintext only with
`insecure = True`. A peer that does not come within `connect_s`, or a message that does not come
within `recv_s`, stops the stage with an error naming the peer, never a hang.

One job a module: `addresses` (where parties listen, how long to wait; no Flight needed),
`auth` (credentials and the bearer-token check), `server` (who it lets in, and the one line a
refusal is), `endpoint` (the sessions a party expects, dialing with backoff, starting a run),
`stream` (one stream's link and pump), `channel` (one session's streams), `loopback` (a trial
federation on this machine), `proof` (what binds a caller's token to its certificate). This
file imports none of them, so reading addresses and timeouts does not load `pyarrow.flight`.
"""
