"""A trial federation on one machine, split from a one-process config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from splitrec_core.config import (
    BottomConfig,
    Config,
    TopConfig,
)
from splitrec_core.federation.files import Federation, Member, PrivateParty, shared_settings
from splitrec_core.io import write_bytes

if TYPE_CHECKING:
    pass


def write_trial_federation(cfg: Config, data_files: dict[str, Path], out_dir: Path,
                           base_port: int, host: str = "127.0.0.1",
                           ) -> dict[str, tuple[Path, Path]]:
    """Split a one-process config into a trial federation on `host`.

    The label party listens on `base_port`, the others in config order on the ports after it
    (on 127.0.0.1 alone, the default for a loopback address: `PartyView.listen`).
    For each party a folder `out_dir/<party>/` with its copy of `federation.toml`, its private
    `party.toml`, its data file and its credentials (a fresh CA for all). Returns party →
    (federation file, private file). What a real federation's parties each write for
    themselves.
    """
    import shutil

    import tomli_w

    from splitrec_core.certs import make_trial_credentials

    order = cfg.order
    staging = out_dir / ".credentials"
    made = make_trial_credentials({p: [host, "localhost"] for p in order}, staging)
    federation = Federation(
        **shared_settings(cfg) | {"training": cfg.training.model_copy(
            update={"parties_in": "threads"})},  # parties apart place themselves
        parties=[Member(name=p, address=f"{host}:{base_port + i}",
                        token_sha256=made[p].token_sha256()) for i, p in enumerate(order)],
        model=TopConfig(**{k: getattr(cfg.model, k) for k in TopConfig.model_fields}))
    shared = tomli_w.dumps(federation.model_dump(mode="json", exclude_none=True))
    written = {}
    for party in cfg.parties:
        folder = out_dir / party.name
        data = folder / "data" / data_files[party.name].name
        data.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_files[party.name], data)
        shutil.copytree(staging / party.name, folder / "credentials", dirs_exist_ok=True)
        private = PrivateParty(
            party=party.name, file=str(data.relative_to(folder)), id_column=party.id_column,
            categorical=party.categorical, numeric=party.numeric,
            split_column=party.split_column, events=party.events, engine=party.engine,
            bottom=BottomConfig(embedding_dim=cfg.model.embedding_dim,
                                bottom_units=cfg.model.bottom_units))
        federation_file = write_bytes(shared.encode(), folder / "federation.toml")
        private_file = write_bytes(
            tomli_w.dumps(private.model_dump(mode="json", exclude_none=True)).encode(),
            folder / "party.toml")
        written[party.name] = (federation_file, private_file)
    shutil.rmtree(staging)
    return written
