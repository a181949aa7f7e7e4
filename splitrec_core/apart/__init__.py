"""One party's network stages when the parties run apart, each a session on its Flight endpoint.

PSI, split training, scoring and the registry's sessions each run as a session of their own on
the party's Flight endpoint, with the peers the federation file names. A run starts when the
label party invites the feature parties that serve.

One job a module: `sessions` (the endpoint kept per process, a stage's session, a party's
traffic), `serving` (the jobs a serving party runs, inviting and accepting runs), `psi`,
`training`, `scoring`, `registry_protocol` (registering a version and moving the aliases at
every party) and `messages` (what the registry's sessions send, typed).
"""
